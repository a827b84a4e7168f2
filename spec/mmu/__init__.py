"""arch/arm64/kvm/mmu.c (5.13): the VM state (memslots, host mm, dirty logs), MS, MS-PERM, DIRTY,
PROGRESS and C-MMU-*."""
