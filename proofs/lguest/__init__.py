"""Checks of lguest's shadow page tables: lock-step, exhaustive, the seed's findings, z3 lemmas, planted bugs."""
