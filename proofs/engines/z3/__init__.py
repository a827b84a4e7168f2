"""Run impl's own Python on z3 bit-vector terms (``bv``) and prove lemmas by symbolic exploration (``explore``)."""
