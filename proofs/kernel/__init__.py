"""The kernel's own ``arch/arm64/kvm/hyp/pgtable.c`` run in userspace: judged by the spec, and
compared with impl.

Modules: ``tree`` (a kernel tree: version from its Makefile, the shape of its stage-2 code),
``fetch`` (obtain and cache Debian's linux-source-6.1), ``build`` (compile a tree's pgtable.c with
our shims, one library per granule, cached by content hash), ``cside`` (ctypes wrapper with impl's
API and raw state), ``subject`` (the C table as a subject of the stage-2 lock-step, judged by the
spec), ``check`` (the ``ptspec check-kernel`` command), ``checks_spec`` (its ``kernel.lockstep.*``
obligations), ``paired`` (impl as one more judge on the same runs), ``kernels`` (impl's
kernel-version profiles), ``pair`` (both sides in lock-step and the comparison), ``opgen`` (random
operations for the differ), ``differ`` (the ``ptspec diff-kernel`` command), ``catalogue`` (known
differences from impl, and findings: spec violations released kernels really show),
``planted`` (bugs the checks must catch, in impl, in the shim, or in a scratch copy of the C).
Leaves out: hyp stage-1 comparison, concurrency, ``KVM_PGTABLE_S2_IDMAP``. See docs/kernel.md and
docs/kdiff.md.
"""
