"""arch/arm64/kvm/mmu.c (5.13): the stage-2 fault path, memslots, dirty logging, MMU notifiers, hyp mappings."""
