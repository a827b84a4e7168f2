"""Shared by the kdiff tests: skip, with the reason, where the kernel source or a compiler is missing."""

import pytest

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import fetch


def need_kernel(page_shift: int = 12):
    """The cached kernel source, with its library built for this granule; else skip the test."""
    src, why = fetch.locate()
    if src is None:
        pytest.skip(f"kdiff: {why}")
    try:
        build.library(page_shift, src)
    except build.BuildError as exc:
        pytest.skip(f"kdiff: {exc}")
    return src


def need_tree(prefix: str, page_shift: int = 12):
    """A cached kernel tree of this version (ptspec.proofs.kernel.tree.cached_tree), with its
    library built for this granule; else skip the test with the reason."""
    from ptspec.proofs.kernel import tree as T
    t, why = T.cached_tree(prefix)
    if t is None:
        pytest.skip(f"kdiff: {why}")
    try:
        build.library(page_shift, t)
    except build.BuildError as exc:
        pytest.skip(f"kdiff: {exc}")
    return t
