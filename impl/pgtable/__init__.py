"""arch/arm64/kvm/hyp/pgtable.c (5.12-5.15 with pKVM ownership): the walker, stage 2, hyp stage 1, their allocator."""
