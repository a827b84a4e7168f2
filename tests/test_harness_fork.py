"""Stage2Harness.fork() (the exhaustive explorer's and the error paths' copy of a harness) is an
independent copy, equal to copy.deepcopy: same tables, pool, memcache and records, and nothing
done to one is seen by the other."""

import copy

from ptspec.proofs.stage2.exhaustive import canonical
from ptspec.proofs.stage2.harness import Stage2Harness
from ptspec.proofs.stage2.lockstep import pkvm_host_force_pte_cb

M2, K4 = 1 << 21, 1 << 12


def _busy(**kw):
    h = Stage2Harness(12, 39, arena_pages=64, mc_capacity=4, **kw)
    h.step("map", addr=1 << 30, size=M2, phys=1 << 32, prot=6)
    h.step("map", addr=(1 << 30) + K4, size=K4, phys=(1 << 32) + 5 * K4, prot=4)
    h.step("set_owner", addr=(1 << 30) + M2, size=2 * K4, owner_id=1)
    h.fail_allocation(1)
    return h


def _view(h):
    return (h.raw_state(), canonical(h), h.program(), list(h.trace), h.steps, h.mc.nobjs,
            h.pgt.mm_ops.fail_at, h.pgt.mm_ops.nr_allocs)


def test_fork_equals_deepcopy_and_is_independent():
    h = _busy()
    twin, deep = h.fork(), copy.deepcopy(h)
    assert _view(twin) == _view(deep) == _view(h)
    before = _view(h)
    _, found = twin.step("unmap", addr=1 << 30, size=2 * M2)
    assert not found
    twin.step("map", addr=1 << 31, size=M2, phys=1 << 33, prot=6)
    assert _view(h) == before                       # the original did not move
    deep.step("unmap", addr=1 << 30, size=2 * M2)
    deep.step("map", addr=1 << 31, size=M2, phys=1 << 33, prot=6)
    assert _view(twin) == _view(deep)               # both continue the same way


def test_fork_keeps_table_options():
    h = _busy(force_pte_cb=pkvm_host_force_pte_cb, fwb=True)
    twin = h.fork()
    assert twin.pgt.force_pte_cb is pkvm_host_force_pte_cb
    assert twin.raw_state() == h.raw_state()


def test_fork_of_a_harness_pickle_cannot_copy_falls_back_to_deepcopy():
    h = _busy(force_pte_cb=lambda addr, end, prot: True)     # a lambda does not pickle
    twin = h.fork()
    assert _view(twin) == _view(h)
    twin.step("unmap", addr=1 << 30, size=M2)
    assert twin.raw_state() != h.raw_state()
