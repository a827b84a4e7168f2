"""kdiff: the kernel's own Linux 6.1 ``arch/arm64/kvm/hyp/pgtable.c`` run in userspace against impl.

Modules: ``fetch`` (obtain and cache the source from Debian's linux-source-6.1), ``build`` (compile
it with our shims, one library per granule), ``cside`` (ctypes wrapper with impl's API and raw
state), ``kernels`` (impl's kernel-version profiles), ``pair`` (both sides in lock-step and the
comparison), ``opgen`` (random operations), ``differ`` (the ``ptspec diff-kernel`` command),
``catalogue`` (the known differences, replayable), ``planted`` (bugs the differ must catch).
Leaves out: hyp stage-1 comparison, concurrency, ``KVM_PGTABLE_S2_IDMAP``. See docs/kdiff.md.
"""
