"""The hyp stage-1 table (pgtable.c's kvm_pgtable_hyp_*): invariants S1-* and contracts C-HYP-*."""
