"""The KVM stage-2 table (pgtable.c): raw state, step records, invariants S2-*, contracts C-*, S2-BBM and C-CMO."""
