"""Checks of stage 2 (pgtable.c): lock-step, exhaustive, error paths, z3 lemmas, CrossHair, units, planted bugs."""
