"""The kernel's 6.1 pgtable.c in userspace: build, geometry, one map/unmap compared with impl, and
the C side's raw state read by the spec. Skipped (with the reason) without the package or a C
compiler."""

import errno

import pytest

from ptspec import spec
from ptspec.proofs.kernel import build
from ptspec.proofs.kernel.pair import GEOMETRIES, Pair
from ptspec.proofs.stage2.ptdump import render


from kdiff_support import need_kernel  # noqa: E402  (tests/ is on sys.path)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_kernel_geometry_matches_impl(name):
    """kvm_get_vtcr + __kvm_pgtable_stage2_init choose impl's start level and root pages."""
    need_kernel(GEOMETRIES[name][0])
    p = Pair(name)
    assert p.c.start_level == p.i.start_level
    assert p.c.roots() == list(p.i.pgd)
    assert p.compare() == []


def test_build_is_cached_and_keyed():
    src = need_kernel()
    a = build.library(12, src)
    assert build.library(12, src) == a
    assert build.library(12, src, defines=("KDIFF_PLANT_ROOT_REF",)) != a
    assert str(a).startswith(str(build.fetch.cache_dir()))


def test_one_map_unmap_word_for_word():
    need_kernel()
    p = Pair("4k-39")
    assert p.map(0x200000, 0x201000, 0x8000000000, 6) == (0, 0)
    assert p.compare() == []
    st = p.c_raw()
    assert spec.check_state(st) == []
    blocks = [w for ws in st["pages"].values() for w in ws if w & 3 == 1]
    assert len(blocks) == 1                    # the 2M block
    assert "2M PMD L2" in render(spec.load_state(st))
    assert p.unmap(0, 1 << 30) == (0, 0)
    assert p.compare() == []
    assert p.c.used_pages() == p.c.roots()     # tables freed again


def test_c_side_errors_and_outputs():
    need_kernel()
    p = Pair("4k-39")
    top = 1 << 39
    assert p.map(top, 0x1000, 0, 6) == (-errno.ERANGE, -errno.ERANGE)
    assert p.map(0, 0x1000, 0, 0x9) == (-errno.EINVAL, -errno.EINVAL)     # X + DEVICE
    assert p.set_owner(0, 0x1000, 2) == (-errno.EINVAL, -errno.EINVAL)
    assert p.map(0, 0x1000, 0x1000, 6, mc="none") == (-errno.ENOMEM, -errno.ENOMEM)
    assert p.compare() == []
    p.map(0, 0x1000, 0x1000, 4)
    cr, ir = p.mkyoung(0x10)
    assert cr == ir and cr & 1
    assert p.get_leaf(0)[0] == p.get_leaf(0)[1]
    assert p.is_young(0) == (True, True)
    p.destroy()
    assert p.compare() == []
    assert p.unmap(0, 0x1000) == (-errno.EINVAL, -errno.EINVAL)
    assert p.c.free_pages() == p.i.pool.free_pages()


def test_allocation_failure_injection_matches():
    need_kernel()
    p = Pair("4k-48")
    assert p.map(0x40000000, 0x1000, 0x8000000000, 6, fail=1) == (-errno.ENOMEM, -errno.ENOMEM)
    assert p.compare() == []


def test_misuse_is_refused_before_the_c_code():
    need_kernel()
    p = Pair("4k-39")
    with pytest.raises(ValueError):
        p.c.map(-1, 0x1000, 0, 6, None)
    with pytest.raises(ValueError):
        p.c.set_owner(0, 0x1000, None, 256)
    p.destroy()
    with pytest.raises(ValueError):
        p.c.destroy()
    p2 = Pair("4k-39")                        # a new pair of the same granule resets the library
    with pytest.raises(RuntimeError):
        p.c.map(0, 0x1000, 0, 6, None)
    assert p2.compare() == []


def test_force_pte_and_nofwb_configurations():
    need_kernel()
    p = Pair("4k-39", force_pte=True)
    assert p.map(0x200000, 0x200000, 0x8000200000, 6) == (0, 0)
    assert p.compare() == []
    for addr in (0x200000, 0x3ff000):
        cr, ir = p.get_leaf(addr)
        assert cr == ir and cr[0] == 0 and cr[2] == 3     # pages, not one 2M block
    assert p.check_c() == []
    p = Pair("4k-39", fwb=True, flags=1)      # KVM_PGTABLE_S2_NOFWB: no FWB encodings
    assert p.c.has_fwb() is False and p.i.has_fwb() is False
    assert p.map(0x200000, 0x200000, 0x8000200000, 6) == (0, 0)
    assert p.flush(0x200000, 0x200000) == (0, 0)
    assert p.compare() == []
    assert any(e[0] == "dcache" for e in p.last_events)
    with pytest.raises(ValueError):
        Pair("4k-39", flags=2)
