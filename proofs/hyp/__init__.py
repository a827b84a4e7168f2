"""Checks of hyp stage 1 (pgtable.c's kvm_pgtable_hyp_*): lock-step runs and planted bugs."""
