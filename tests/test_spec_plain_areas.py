"""The optimised evaluators of spec/hyp, spec/mmu and spec/lguest equal their plain twins.

The stage-2 ones are in tests/test_spec_plain.py; here:

* hyp contract_hyp_map's inside sweep (skips runs of empty slots)  == hyp_map_wrong_pages_plain
* mmu check_ms (per host leaf)                                     == ms_leaf_breaks_plain, per page
* mmu MmuView.leaves_in (bisect over cached leaves)                 == a linear filter
* lguest invariants' memoised translations                         == computed afresh

Each runs impl's own code through its harness, then corrupts the states (descriptor bits, host
leaves) so that both forms are compared on failing inputs too.
"""


import pytest
from program_support import editable

from ptspec import spec
from ptspec.spec.arch import geometry as G

K4, M2 = G.granule_size(3, 12), G.granule_size(2, 12)


# -- lguest: memoised translations against a fresh computation --------------------------------------

def test_lguest_memo_equals_fresh():
    from ptspec.proofs.lguest.harness import LguestHarness
    from ptspec.spec.lguest import invariants as LI
    from ptspec.spec.lguest.walk import shadow_translations
    from ptspec.proofs.lguest import guest as LG
    for fmt in ("2level", "pae"):
        layout = LG.GuestLayout(fmt)
        h = LguestHarness(fmt)
        LG.boot(h, layout)
        for va in layout.kernel_vas[:3] + layout.user_vas[:3]:
            h.step("fault", vaddr=va, errcode=2)
        h.step("run", host_cpu=0)
        assert not h.violations
        st_ = spec.load_state(h.raw_state())
        memo, _ = LI._translations(st_)
        fresh = {}
        for i, pd in LI._slots(st_):
            for va, sh in shadow_translations(st_, pd["pgdir"], []).items():
                fresh[(i, va)] = sh
        assert memo == fresh and memo


# -- mmu: bisect over cached leaves against a linear filter -----------------------------------------

def test_mmu_leaves_in_equals_linear_filter():
    from ptspec.proofs.mmu.harness import VmHarness
    from ptspec.proofs.mmu.layouts import interesting_ipas, make_layout
    from ptspec.spec.mmu.state import MmuView
    layout = make_layout(12, "thp", nblocks=2, head=1)
    h = VmHarness(layout)
    for ipa in interesting_ipas(layout):
        h.step("access", ipa=ipa, kind="write")
    view = MmuView(h.raw_state())
    leaves = view.leaves()
    assert leaves
    for ipa in interesting_ipas(layout):
        for lo, hi in ((ipa, ipa + 1), (ipa - M2, ipa + M2)):
            assert view.leaves_in(lo, hi) == [lf for lf in leaves if lf.ipa < hi and lo < lf.ipa + lf.size]


# -- hyp stage 1: the map contract's run-skipping sweep against every page -----------------------------

def test_hyp_map_sweep_equals_plain():
    from ptspec.proofs.hyp.lockstep import HypHarness
    from ptspec.spec.hyp import contracts as HC
    from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W
    h = HypHarness(12, 39, 64)
    runs = [(0x4000_0000, M2, 0x8000_0000), (0x4000_0000 + K4, 3 * K4, 0x9000_0000),
            (0x4020_0000 - K4, 2 * K4, 0x8010_0000)]
    compared = 0
    for addr, size, phys in runs:
        pre = h.raw_state()
        prot = KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W
        ret, _ = h.step("map", addr=addr, size=size, phys=phys, prot=prot)
        post = h.raw_state()
        step = {"op": "map", "args": {"addr": addr, "size": size, "phys": phys, "prot": prot},
                "ret": ret, "out": {}}
        bads = [post]
        for pa in sorted(post["pages"]):
            for i, w in enumerate(post["pages"][pa]):
                if w & 1:
                    for bit in (6, 12):
                        bad = editable(post)
                        bad["pages"][pa][i] ^= 1 << bit
                        bads.append(bad)
        for bad in bads:
            fast = [str(v) for v in HC.contract_hyp_map(pre, step, bad) if "should be" in v.message]
            plain = HC.hyp_map_wrong_pages_plain(pre, step, bad)
            assert bool(fast) == bool(plain), (fast, plain)
            compared += bool(plain)
    assert compared, "the corrupted states must be refuted by both forms"


# -- mmu MS: host leaves against every page ----------------------------------------------------------

@pytest.mark.parametrize("backing", ["thp", "anon", "hugetlb:21", "hugetlb:30", "pfnmap", "thp-ro"])
def test_ms_equals_plain(backing):
    """MS's per-host-leaf check and its per-page statement flag the same leaves, on the fault path's
    own tables and with each leaf's output address, S2AP W or MemAttr corrupted in turn."""
    from ptspec.proofs.mmu.harness import VmHarness
    from ptspec.proofs.mmu.layouts import interesting_ipas, make_layout
    from ptspec.spec.mmu.invariants import check_ms, ms_leaf_breaks_plain
    from ptspec.spec.mmu.state import MmuView
    ro = backing.endswith("-ro")                   # a read-only VMA, read: S2AP W flipped on is wrong
    layout = make_layout(12, backing.removesuffix("-ro"), nblocks=2, head=1 if backing == "anon" else 0,
                         misalign=backing == "anon", vma_writable=not ro)
    h = VmHarness(layout, check=False)
    for ipa in interesting_ipas(layout):
        h.step("access", ipa=ipa, kind="read" if ro else "write")
    raw = h.raw_state()
    views = [MmuView(raw)]
    leaves = views[0].leaves()
    assert leaves
    for lf in leaves[:6]:
        for bit in (2, 7, 12, 21):
            bad = editable(raw)
            for words in bad["pages"].values():
                for i, w in enumerate(words):
                    if w == lf.desc:
                        words[i] = w ^ (1 << bit)
            views.append(MmuView(bad))
    split = editable(raw)                     # every host leaf of an even page count halved
    split["mmu"]["host_map"] = [piece for start, size, pfn, kind, w in raw["mmu"]["host_map"]
                                for piece in ([[start, size // 2, pfn, kind, w],
                                               [start + size // 2, size // 2, pfn + (size // 2 >> 12), kind, w]]
                                              if size > K4 and size // 2 % K4 == 0
                                              else [[start, size, pfn, kind, w]])]
    views.append(MmuView(split))
    refuted = 0
    for view in views:
        breaks = [(lf.ipa, ms_leaf_breaks_plain(view, lf)) for lf in view.leaves()]
        inside = {ipa for ipa, b in breaks if b is not None}
        plain = {ipa for ipa, b in breaks if b}
        fast = {v.where["ipa"] for v in check_ms(view) if "ipa" in v.where} & inside
        assert fast == plain, (backing, fast, plain)
        refuted += bool(plain)
    assert refuted, "the corrupted states must break MS"
