"""Compile a kernel tree's ``pgtable.c`` (5.15, 5.16-6.1) with ptspec's shims into a host library.

``PAGE_SHIFT`` is a compile-time constant in the kernel, so there is one library per granule
(``-DPAGE_SHIFT=12|14|16``), with ``ID_AA64MMFR0_EL1_PARANGE_MAX`` as the kernel config sets it
(52-bit PA only with 64K pages, as ``CONFIG_ARM64_PA_BITS_52`` requires in 6.1; 48 otherwise).
Libraries are cached in the kdiff cache directory (never the repository), named by a hash of the
kernel source, the shim files, the flags and the compiler, so any change rebuilds.

``library(page_shift)`` returns the path of a built library, or raises ``BuildError`` with a reason
(no source cached, no C compiler, compile error with its first lines).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ptspec.proofs.kernel import fetch
from ptspec.proofs.kernel.tree import shim_defines

SHIM_DIR = Path(__file__).with_name("shim")
SHIM_FILES = ("linux/bits.h", "linux/bitfield.h", "linux/types.h", "linux/pgtable.h",
              "linux/kvm_host.h", "kdiff_rt.c", "linux/kdiff_mainline.h", "kdiff_mainline_rt.c",
              "kdiff_guard.c")
CFLAGS = ("-O2", "-fPIC", "-shared", "-fno-strict-aliasing", "-fwrapv", "-w",
          # every function the tree calls must be one the shim defines: a missing one is a build
          # error naming it (not a failure to load the library)
          "-Wl,-z,defs")
# The reworked walker's builds fill uninitialised locals with a pattern (0xfe bytes), so a read of
# one is the same wrong value on every machine (6.12's relax_perms TLBI level) instead of whatever
# the stack held; dropped if the compiler does not know the option.
MAINLINE_CFLAGS = ("-ftrivial-auto-var-init=pattern",)


def _extra_cflags(defines) -> tuple:
    return MAINLINE_CFLAGS if "KDIFF_MAINLINE" in defines else ()
PARANGE = {12: 5, 14: 5, 16: 6}       # ID_AA64MMFR0_EL1_PARANGE_48 / _52


class BuildError(RuntimeError):
    """The library could not be built; the message says why."""


_COMPILERS: dict = {}        # ($CC, $PATH) -> what compiler() found there


def compiler() -> str | None:
    where = (os.environ.get("CC"), os.environ.get("PATH"))
    if where not in _COMPILERS:
        _COMPILERS[where] = _find_compiler()
    return _COMPILERS[where]


def _find_compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc and shutil.which(cc):
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


HEADERS = ("asm/kvm_pgtable.h", "asm/stage2_pgtable.h")


def _key(src: fetch.Source, cc: str, page_shift: int, defines=()) -> str:
    h = hashlib.sha256()
    h.update(src.pgtable_c.read_bytes())
    for hdr in HEADERS:
        h.update((src.include_dir / hdr).read_bytes())
    for f in SHIM_FILES:
        h.update(f.encode())
        h.update((SHIM_DIR / f).read_bytes())
    h.update(repr((CFLAGS + _extra_cflags(defines), page_shift, PARANGE[page_shift], cc,
                   tuple(defines))).encode())
    return h.hexdigest()[:16]


# _key read and hashed every input file on every call: ~1 ms per C table made, which a lock-step
# run and each exhaustive transition do. The key is kept per signature of its inputs (path, size
# and modification time of each file, as make judges them), so a changed file is hashed again.
_KEYS: dict = {}


_INPUTS: dict = {}          # (pgtable.c, include dir) -> the input files' paths, as strings


def _signature(src: fetch.Source, cc: str, page_shift: int, defines) -> tuple:
    where = (src.pgtable_c, src.include_dir)
    files = _INPUTS.get(where)
    if files is None:
        files = _INPUTS[where] = tuple(map(str, (
            src.pgtable_c, *(src.include_dir / hdr for hdr in HEADERS),
            *(SHIM_DIR / f for f in SHIM_FILES))))
    return (tuple((f, st.st_size, st.st_mtime_ns) for f in files for st in (os.stat(f),)),
            cc, page_shift, tuple(defines))


def _cached_key(src: fetch.Source, cc: str, page_shift: int, defines=()) -> str:
    """_key, hashed again only when an input file's size or modification time changed."""
    sig = _signature(src, cc, page_shift, defines)
    key = _KEYS.get(sig)
    if key is None:
        key = _KEYS[sig] = _key(src, cc, page_shift, defines)
    return key


def _runtime(defines) -> str:
    """The shim runtime to link: the reworked walker's (6.2 on, -DKDIFF_MAINLINE) includes the
    base one and adds what that walker needs."""
    return "kdiff_mainline_rt.c" if "KDIFF_MAINLINE" in defines else "kdiff_rt.c"


def library(page_shift: int, src: fetch.Source | None = None, defines=()) -> Path:
    """Path of the shared library for this granule, built if not cached.

    ``defines`` are extra preprocessor symbols (only the planted-bug variants of the shim use them);
    a ``tree.Tree`` adds those its shape needs (``tree.shim_defines``: 5.15's init takes kvm_arch).
    """
    defines = tuple(defines) + tuple(d for d in shim_defines(getattr(src, "shape", None))
                                     if d not in defines)
    if page_shift not in PARANGE:
        raise ValueError(f"page_shift must be 12, 14 or 16, not {page_shift!r}")
    if src is None:
        src, why = fetch.locate()
        if src is None:
            raise BuildError(why)
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler (cc, gcc or clang; or $CC) found on PATH")
    out_dir = fetch.cache_dir() / "build"
    out = out_dir / f"pgtable-{src.version}-{page_shift}-{_cached_key(src, cc, page_shift, defines)}.so"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    cmd = [cc, *CFLAGS, *_extra_cflags(defines), f"-DPAGE_SHIFT={page_shift}",
           f"-DKDIFF_PARANGE_MAX={PARANGE[page_shift]}",
           *(f"-D{d}" for d in defines), "-I", str(SHIM_DIR), "-I", str(src.include_dir),
           "-o", str(tmp), str(src.pgtable_c), str(SHIM_DIR / _runtime(defines)),
           str(SHIM_DIR / "kdiff_guard.c")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    extra = _extra_cflags(defines)
    if r.returncode != 0 and extra and any(f.split("=")[0] in (r.stderr or "") for f in extra):
        r = subprocess.run([c for c in cmd if c not in extra], capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()[:15]
        raise BuildError("compiling pgtable.c failed:\n" + "\n".join(lines))
    os.replace(tmp, out)
    return out
