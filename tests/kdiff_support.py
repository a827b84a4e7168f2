"""Shared by the kdiff tests: skip, with the reason, where the kernel source or a compiler is missing."""

import pytest

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import fetch


def _built(found, why, page_shift: int):
    """``found`` (a source or tree) with its library built for this granule; else skip, saying why."""
    if found is None:
        pytest.skip(f"kdiff: {why}")
    try:
        build.library(page_shift, found)
    except build.BuildError as exc:
        pytest.skip(f"kdiff: {exc}")
    return found


def need_kernel(page_shift: int = 12):
    """The cached kernel source, with its library built for this granule; else skip the test."""
    return _built(*fetch.locate(), page_shift)


def need_tree(prefix: str, page_shift: int = 12):
    """A cached kernel tree of this version (ptspec.proofs.kernel.tree.cached_tree), with its
    library built for this granule; else skip the test with the reason."""
    from ptspec.proofs.kernel import tree as T
    return _built(*T.cached_tree(prefix), page_shift)


def need_default_tree(page_shift: int = 12):
    """The cached Debian 6.1 tree (ptspec.proofs.kernel.tree.default_tree), with its library built
    for this granule; else skip the test with the reason."""
    from ptspec.proofs.kernel import tree as T
    return _built(*T.default_tree(), page_shift)
