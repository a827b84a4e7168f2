"""Obtain the Linux 6.1 stage-2 page-table source from Debian's ``linux-source-6.1`` package, cached.

Only three files of the kernel are used: ``arch/arm64/kvm/hyp/pgtable.c``,
``arch/arm64/include/asm/kvm_pgtable.h`` and ``arch/arm64/include/asm/stage2_pgtable.h`` (plus the
top-level ``Makefile`` to read the exact version). ``fetch()`` runs ``apt-get download
linux-source-6.1`` (the ordinary package client, ~139 MB), reads the ``.deb`` (an ``ar`` archive
holding a tar that holds ``linux-source-6.1.tar.xz``) with the standard library, extracts just those
files into the cache, writes a manifest, and deletes the ``.deb``.

The cache is ``$PTSPEC_CACHE/kdiff`` or ``~/.cache/ptspec/kdiff``: never inside the repository, so
no kernel source (nor anything built from it) can be committed by accident. ``locate()`` never
downloads; it says what is missing and how to get it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "linux-source-6.1"
INNER_TARBALL = "usr/src/linux-source-6.1.tar.xz"
TOP = "linux-source-6.1"
WANTED = (
    "arch/arm64/kvm/hyp/pgtable.c",
    "arch/arm64/include/asm/kvm_pgtable.h",
    "arch/arm64/include/asm/stage2_pgtable.h",
    "Makefile",
)
FETCH_HINT = "run `ptspec diff-kernel --fetch` (or set PTSPEC_KDIFF_FETCH=1) to download it once"


class FetchError(RuntimeError):
    """The source could not be obtained; the message says why."""


@dataclass(frozen=True)
class Source:
    root: Path              # the directory holding arch/... and Makefile
    version: str            # e.g. "6.1.192"
    deb: str                # the .deb file name it came from
    sha256: dict            # relative path -> sha256 of the extracted file

    @property
    def pgtable_c(self) -> Path:
        return self.root / WANTED[0]

    @property
    def include_dir(self) -> Path:
        return self.root / "arch/arm64/include"


def cache_dir() -> Path:
    base = os.environ.get("PTSPEC_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "ptspec"
    return root / "kdiff"


def _manifest_path() -> Path:
    return cache_dir() / "source" / "manifest.json"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locate() -> tuple[Source | None, str]:
    """The cached source, or None and the reason (never downloads)."""
    mpath = _manifest_path()
    if not mpath.exists():
        return None, f"the {PACKAGE} source is not cached in {cache_dir()}; {FETCH_HINT}"
    try:
        m = json.loads(mpath.read_text())
        src = Source(Path(m["root"]), m["version"], m["deb"], m["sha256"])
    except (OSError, ValueError, KeyError) as exc:
        return None, f"unreadable manifest {mpath} ({exc}); {FETCH_HINT}"
    for rel, digest in src.sha256.items():
        p = src.root / rel
        if not p.exists() or _sha(p) != digest:
            return None, f"cached file {p} is missing or changed; {FETCH_HINT}"
    return src, ""


def _ar_member(deb: Path, prefix: str):
    """(offset, size) of the first member of the ar archive whose name starts with prefix."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb} is not a Debian package (no ar header)")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                raise FetchError(f"{deb} has no {prefix}* member")
            name = hdr[:16].decode().strip().rstrip("/")
            size = int(hdr[48:58].decode().strip())
            if name.startswith(prefix):
                return f.tell(), size
            f.seek(size + (size & 1), os.SEEK_CUR)


class _Window:
    """A read-only file object over [offset, offset + size) of a file."""

    def __init__(self, f, offset, size):
        self.f, self.left = f, size
        f.seek(offset)

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n)
        self.left -= len(data)
        return data


def extract(deb: Path, dest: Path, progress=print) -> Source:
    """Extract WANTED from the package into dest; return the Source with its manifest written."""
    off, size = _ar_member(deb, "data.tar")
    wanted = {f"{TOP}/{w}" for w in WANTED}
    found: dict[str, bytes] = {}
    with open(deb, "rb") as f:
        with tarfile.open(fileobj=_Window(f, off, size), mode="r|*") as outer:
            for m in outer:
                if m.name.lstrip("./") != INNER_TARBALL:
                    continue
                progress(f"kdiff: reading {INNER_TARBALL} (takes ~20 s)")
                with tarfile.open(fileobj=outer.extractfile(m), mode="r|xz") as inner:
                    for im in inner:
                        if im.name in wanted and im.isfile():
                            found[im.name] = inner.extractfile(im).read()
                            if len(found) == len(wanted):
                                break
                break
    missing = wanted - set(found)
    if missing:
        raise FetchError(f"{deb.name} lacks {', '.join(sorted(missing))}")
    root = dest / TOP
    sums = {}
    for name, data in found.items():
        rel = name[len(TOP) + 1:]
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        sums[rel] = hashlib.sha256(data).hexdigest()
    version = _version(root / "Makefile")
    src = Source(root, version, deb.name, sums)
    (dest / "manifest.json").write_text(json.dumps(
        {"root": str(root), "version": version, "deb": deb.name, "sha256": sums}, indent=1))
    return src


def _version(makefile: Path) -> str:
    fields = {}
    for line in makefile.read_text(errors="replace").splitlines()[:12]:
        k, _, v = line.partition("=")
        if k.strip() in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
            fields[k.strip()] = v.strip()
    return ".".join(fields.get(k, "?") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))


def fetch(progress=print, keep_deb: bool = False) -> Source:
    """Download (unless a .deb is already in the cache) and extract; returns the cached Source."""
    src, _ = locate()
    if src is not None:
        return src
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    debs = sorted(glob.glob(str(cdir / f"{PACKAGE}_*.deb")))
    if not debs:
        if shutil.which("apt-get") is None:
            raise FetchError("apt-get is not available: cannot download "
                             f"{PACKAGE}; put its .deb into {cdir} by hand")
        progress(f"kdiff: apt-get download {PACKAGE} into {cdir} (~139 MB)")
        r = subprocess.run(["apt-get", "download", PACKAGE], cwd=cdir, capture_output=True,
                           text=True)
        if r.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            # a fresh machine may have no package lists yet: read them once and try again
            progress("kdiff: apt-get update (no package lists yet?)")
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            r = subprocess.run(["apt-get", "download", PACKAGE], cwd=cdir, capture_output=True,
                               text=True)
        debs = sorted(glob.glob(str(cdir / f"{PACKAGE}_*.deb")))
        if r.returncode != 0 or not debs:
            raise FetchError(f"apt-get download {PACKAGE} failed (exit {r.returncode}): "
                             f"{(r.stderr or r.stdout).strip()[-400:]}")
    deb = Path(debs[-1])
    dest = cdir / "source"
    if dest.exists():
        shutil.rmtree(dest)
    src = extract(deb, dest, progress)
    if not keep_deb:
        deb.unlink()
    progress(f"kdiff: Linux {src.version} stage-2 sources cached in {src.root}")
    return src
