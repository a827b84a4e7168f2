"""Checks of mmu.c (5.13): VM lock-step over memslot layouts, exhaustive runs, directed cases, z3 lemmas, planted bugs."""
