"""A kernel source tree as the C-side checks use it: its version and the shape of its stage-2 code.

``open_tree(DIR)`` checks that DIR holds the four files the shim builds from
(``arch/arm64/kvm/hyp/pgtable.c``, ``arch/arm64/include/asm/kvm_pgtable.h``,
``arch/arm64/include/asm/stage2_pgtable.h``, ``Makefile``), reads ``VERSION``/``PATCHLEVEL``/
``SUBLEVEL`` from the Makefile, and detects the code's shape by reading declarations:

* the stage-2 init entry point, its parameters and what its second one is: 5.16 on define
  ``__kvm_pgtable_stage2_init(pgt, mmu, mm_ops, flags, force_pte_cb)`` taking the
  ``struct kvm_s2_mmu``; 5.15 defines the same name and arity but takes the ``struct kvm_arch``
  (``arch->vtcr``, ``pgt->mmu = &arch->mmu``); 5.14 has ``kvm_pgtable_stage2_init_flags(pgt,
  arch, mm_ops, flags)`` and no ``force_pte_cb``, as 5.13 has (pKVM's 5.13), whose
  ``kvm_pgtable_mm_ops`` has no cache-maintenance hooks yet (``mm_cmo``: the fault path in mmu.c
  cleaned and invalidated; 5.14 moved that into pgtable.c behind the hooks);
* where owner ids live in invalid descriptors (``KVM_INVALID_PTE_OWNER_MASK``) and the largest id
  (``KVM_MAX_OWNER_ID``);
* whether ``struct kvm_pgtable`` has a ``force_pte_cb``.

The shim drives ``__kvm_pgtable_stage2_init`` with five parameters, given either the mmu (5.16 on)
or the kvm_arch (5.15), and 5.14's ``kvm_pgtable_stage2_init_flags``: ``shim_defines`` says which
to the build (a 5.14 table has no ``force_pte_cb``, so the page-forcing option is not offered;
a 5.13 table has no CMO hooks, so its tables run without them).
A tree of another shape is refused with one line naming what the shim lacks (``TreeError``),
never half-built. Nothing is copied from the tree: the build compiles its files where they are
(``ptspec.proofs.kernel.build``, cached by content hash outside the repository).
``default_tree()`` is the cached Debian 6.1 source (``ptspec.proofs.kernel.fetch``).

The spec judges a state by its ``kernel_version`` (the behaviour of each kernel), so the version a
tree is judged as matters. ``open_tree(DIR, kernel_version=...)`` judges a tree as another kernel
than its Makefile says (a distro or vendor tree carrying later changes); ``version_conflicts``
lists where the source's own API contradicts the version it is judged as (a later interface the
spec ties to a later kernel, or an earlier one missing), so that such a tree is refused with the
remedy rather than misjudged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ptspec.proofs.kernel import fetch
from ptspec.proofs.kernel import tree_mainline

FILES = ("arch/arm64/kvm/hyp/pgtable.c", "arch/arm64/include/asm/kvm_pgtable.h",
         "arch/arm64/include/asm/stage2_pgtable.h", "Makefile")
SUPPORTED_INIT = "__kvm_pgtable_stage2_init"
INIT_FLAGS = "kvm_pgtable_stage2_init_flags"         # 5.14's init: no force_pte_cb parameter


class TreeError(RuntimeError):
    """The tree cannot be checked; the message is one line saying what is missing or wrong."""


@dataclass(frozen=True)
class Shape:
    init: str                       # the init function the tree declares
    init_params: tuple              # its parameter names
    init_types: tuple               # its parameter types, as written ("struct kvm_arch *", ...)
    owner_field: tuple | None       # (hi, lo) of KVM_INVALID_PTE_OWNER_MASK, None if absent
    max_owner_id: int | None
    force_pte_cb: bool
    mainline: object = None         # tree_mainline.Mainline: the reworked walker (6.2 on), or None
    mm_cmo: bool = True             # kvm_pgtable_mm_ops has the cache-maintenance hooks (5.14 on)

    @property
    def init_takes(self) -> str | None:
        """What the init's second parameter is: "mmu" (struct kvm_s2_mmu), "arch" (struct
        kvm_arch), "kvm" (struct kvm), or None if it has none of these."""
        if len(self.init_types) < 2:
            return None
        t = self.init_types[1]
        for word, what in (("kvm_s2_mmu", "mmu"), ("kvm_arch", "arch"), ("kvm", "kvm")):
            if re.search(rf"\bstruct\s+{word}\b", t):
                return what
        return None

    def describe(self) -> str:
        own = (f"owner ids in bits {self.owner_field[0]}:{self.owner_field[1]}, max owner id "
               f"{self.max_owner_id}" if self.owner_field else "no owner ids")
        takes = {"mmu": "struct kvm_s2_mmu", "arch": "struct kvm_arch", "kvm": "struct kvm"}.get(
            self.init_takes, "neither mmu nor kvm_arch")
        ml = f"; {self.mainline.describe()}" if self.mainline is not None else ""
        cmo = ("" if self.mm_cmo else "; mm_ops without cache-maintenance hooks (the tables run "
               "without CMO: 5.13's fault path cleans and invalidates itself)")
        return (f"init {self.init}({', '.join(self.init_params)}) takes {takes}; {own}; "
                f"force_pte_cb {'present' if self.force_pte_cb else 'absent'}{cmo}{ml}")


@dataclass(frozen=True)
class Tree:
    root: Path
    version: str
    shape: Shape
    sha256: dict = field(default_factory=dict)
    makefile_version: str | None = None   # the Makefile's, when judged as another (kernel_version)

    @property
    def pgtable_c(self) -> Path:
        return self.root / FILES[0]

    @property
    def include_dir(self) -> Path:
        return self.root / "arch/arm64/include"

    def version_tuple(self) -> tuple:
        return version_tuple(self.version)

    def opener(self) -> str:
        """The Python expression that opens this tree again as it is judged (for pasteable
        programs)."""
        judged = "" if self.makefile_version is None else f", kernel_version={self.version!r}"
        return f"open_tree({str(self.root)!r}{judged})"


_VERSION_ARG = re.compile(r"\d+\.\d+(\.\d+)?")


def parse_version(text: str) -> str:
    """'6.8' or '6.8.0' -> '6.8.0'; TreeError (one line) for anything else."""
    if not isinstance(text, str) or not _VERSION_ARG.fullmatch(text.strip()):
        raise TreeError(f"kernel version {text!r}: expected MAJOR.MINOR[.SUBLEVEL], e.g. 6.8.0")
    parts = text.strip().split(".")
    return ".".join(str(int(x)) for x in (parts + ["0"])[:3])


def version_conflicts(tree: Tree) -> list[str]:
    """Where the tree's source contradicts the version it is judged as, one line each: an
    interface the spec's version gates tie to a kernel (the reworked walker from 6.2, mkyoung
    returning void from 6.13, KVM_PGTABLE_PROT_NORMAL_NC from 6.9, PX/UX from 6.19,
    KVM_PGTABLE_S2_AS_S1 from 7.0, annotate from 7.1) present before that version or missing
    from it on. Empty for every tree whose code is its Makefile's release."""
    from ptspec.spec.arch import descriptor as D
    from ptspec.spec.stage2 import contracts_attr
    ml = tree.shape.mainline
    v = tree.version_tuple()
    feats = [("the reworked walker (struct kvm_pgtable_visit_ctx)", ml is not None, (6, 2, 0))]
    if ml is not None:
        feats += [
            ("kvm_pgtable_stage2_mkyoung returning void", ml.mkyoung_void,
             contracts_attr.MKYOUNG_VOID_SINCE),
            ("KVM_PGTABLE_PROT_NORMAL_NC", ml.normal_nc is not None, D.NORMAL_NC_SINCE),
            ("KVM_PGTABLE_PROT_PX/UX", ml.px is not None, D.PX_UX_SINCE),
            ("KVM_PGTABLE_S2_AS_S1", "KVM_PGTABLE_S2_AS_S1" in dict(ml.s2_flags), D.AS_S1_SINCE),
            ("kvm_pgtable_stage2_annotate", ml.annotate, D.ANNOTATE_SINCE)]
    out = []
    for what, has, since in feats:
        if has != (v >= tuple(since)):
            out.append(f"its source {'has' if has else 'lacks'} {what}, which the spec ties to "
                       f"Linux {'.'.join(map(str, since))} and later, but it is judged as Linux "
                       f"{tree.version}")
    return out


def version_tuple(version: str) -> tuple:
    """'6.1.176' -> (6, 1, 176); unknown fields count as 0."""
    out = []
    for part in version.split(".")[:3]:
        out.append(int(part) if part.isdigit() else 0)
    return tuple(out + [0] * (3 - len(out)))


def read_version(makefile: Path) -> str:
    fields = {}
    for line in makefile.read_text(errors="replace").splitlines()[:40]:
        k, sep, v = line.partition("=")
        if sep and k.strip() in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
            fields.setdefault(k.strip(), v.strip())
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise TreeError(f"{makefile}: no VERSION/PATCHLEVEL lines: not a kernel Makefile")
    bad = [k for k, v in fields.items() if not v.isdigit()]
    if bad:
        raise TreeError(f"{makefile}: {bad[0]} is not a number ({fields[bad[0]]!r})")
    return ".".join(fields.get(k, "0") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))


_INIT = re.compile(r"^int\s+(__kvm_pgtable_stage2_init|kvm_pgtable_stage2_init_flags|"
                   r"kvm_pgtable_stage2_init)\s*\(([^)]*)\)", re.M | re.S)
_OWNER = re.compile(r"#define\s+KVM_INVALID_PTE_OWNER_MASK\s+GENMASK\((\d+),\s*(\d+)\)")
_MAX_OWNER = re.compile(r"#define\s+KVM_MAX_OWNER_ID\s+(\d+)")


def detect_shape(pgtable_c: str, header: str) -> Shape:
    """The shape of a tree's stage-2 code, from the text of pgtable.c and asm/kvm_pgtable.h."""
    m = _INIT.search(pgtable_c)
    if m is None:
        raise TreeError("pgtable.c defines no stage-2 init function (__kvm_pgtable_stage2_init, "
                        "kvm_pgtable_stage2_init_flags or kvm_pgtable_stage2_init)")
    decls = [" ".join(p.split()) for p in m.group(2).split(",") if p.strip()]
    params = tuple(re.split(r"[\s*]+", d)[-1] for d in decls)
    types = tuple(d[:len(d) - len(n)].strip() for d, n in zip(decls, params))
    own = _OWNER.search(pgtable_c) or _OWNER.search(header)
    mx = _MAX_OWNER.search(pgtable_c) or _MAX_OWNER.search(header)
    ml = tree_mainline.detect(pgtable_c, header)
    field = (int(own.group(1)), int(own.group(2))) if own else None
    top = int(mx.group(1)) if mx else None
    if field is None and ml is not None and ml.annotate and ml.donation_type is not None:
        field, top = tree_mainline.ANNOTATE_OWNER_FIELD, tree_mainline.ANNOTATE_MAX_OWNER_ID
    return Shape(m.group(1), params, types, field, top,
                 re.search(r"\bforce_pte_cb\s*;", header) is not None, ml,
                 re.search(r"\(\s*\*\s*dcache_clean_inval_poc\s*\)", header) is not None)


def unsupported(shape: Shape) -> str | None:
    """Why the shim cannot drive code of this shape, or None."""
    if shape.mainline is not None and tree_mainline.unsupported(shape.mainline):
        return tree_mainline.unsupported(shape.mainline)
    five = (shape.init == SUPPORTED_INIT and len(shape.init_params) == 5
            and shape.init_takes in ("mmu", "arch"))
    if not five and not _is_init_flags(shape):
        return (f"the shim drives {SUPPORTED_INIT}(pgt, mmu|arch, mm_ops, flags, force_pte_cb) "
                f"(5.15 and later) or {INIT_FLAGS}(pgt, arch, mm_ops, flags) (5.14); this tree "
                f"has {shape.init}({', '.join(shape.init_params)})")
    if shape.owner_field is None or shape.max_owner_id is None:
        return "pgtable.c has no KVM_INVALID_PTE_OWNER_MASK/KVM_MAX_OWNER_ID (owner ids)"
    if five and not shape.force_pte_cb:
        return "struct kvm_pgtable has no force_pte_cb"
    return None


def _is_init_flags(shape: Shape) -> bool:
    return (shape.init == INIT_FLAGS and len(shape.init_params) == 4
            and shape.init_takes == "arch")


def shim_defines(shape: Shape | None) -> tuple:
    """Preprocessor symbols that fit the shim's runtime to a supported shape (none for 5.16 on,
    the default; None is the cached 6.1 source)."""
    if shape is None:
        return ()
    if shape.mainline is not None:
        return shape.mainline.defines()
    no_cmo = () if shape.mm_cmo else ("KDIFF_NO_MM_CMO",)       # 5.13: mm_ops has no CMO hooks
    if _is_init_flags(shape):
        return ("KDIFF_INIT_FLAGS",) + no_cmo
    if shape.init_takes == "arch":
        return ("KDIFF_INIT_ARCH",) + no_cmo
    return no_cmo


def open_tree(directory, kernel_version: str | None = None) -> Tree:
    """The tree at `directory`, its version and shape; TreeError (one line) if it cannot be used.
    With `kernel_version` the tree is judged as that kernel (its Makefile's version is kept as
    makefile_version)."""
    root = Path(directory)
    if not root.is_dir():
        raise TreeError(f"{root}: not a directory")
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise TreeError(f"{root}: missing {', '.join(missing)}")
    version = read_version(root / "Makefile")
    judged = parse_version(kernel_version) if kernel_version is not None else None
    shape = detect_shape((root / FILES[0]).read_text(errors="replace"),
                         (root / FILES[1]).read_text(errors="replace"))
    if judged is not None:
        return Tree(root.resolve(), judged, shape, makefile_version=version)
    return Tree(root.resolve(), version, shape)


def trees_dir() -> Path:
    """Where other kernel versions' trees are kept (outside the repository): ``trees/`` beside
    the kdiff cache, e.g. ``~/.cache/ptspec/trees/linux-5.15.100/arch/arm64/...``."""
    return fetch.cache_dir().parent / "trees"


def cached_tree(prefix: str) -> tuple[Tree | None, str]:
    """The first cached tree whose directory name is ``linux-<prefix>`` or starts with
    ``linux-<prefix>.`` (e.g. "5.15": linux-5.15.100, not linux-5.150; "6.1" is not 6.12), or None
    and why (never downloads)."""
    base = trees_dir()
    names = sorted(p for p in base.glob(f"linux-{prefix}*") if p.is_dir() and (
        p.name == f"linux-{prefix}" or p.name.startswith(f"linux-{prefix}."))) if base.is_dir() else []
    if not names:
        return None, f"no linux-{prefix}* tree in {base}"
    try:
        return open_tree(names[0]), ""
    except TreeError as exc:
        return None, str(exc)


def supported_default_tree() -> tuple[Tree | None, str]:
    """default_tree(), or None and why when the shim cannot build its shape (unsupported)."""
    tree, why = default_tree()
    bad = unsupported(tree.shape) if tree is not None else None
    return (None, bad) if bad else (tree, why)


def default_tree() -> tuple[Tree | None, str]:
    """The cached Debian linux-source-6.1 tree, or None and the reason (never downloads)."""
    src, why = fetch.locate()
    if src is None:
        return None, why
    try:
        return open_tree(src.root), ""
    except TreeError as exc:
        return None, str(exc)
