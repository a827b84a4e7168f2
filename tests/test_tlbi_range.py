"""Range TLBI as the hardware does it: __kvm_tlb_flush_vmid_range (the hyp's, nvhe and vhe) rounds
its start down to the page before invalidating ``pages`` pages, so the shim logs
["tlbi_range", addr rounded down, pages << PAGE_SHIFT]. Logged as given, an unaligned start made
the range reach up to the offset into the page after the invalidated ones, and S2-BBM accepted a
leaf there that the hardware never invalidated. Tree tests skip without a cached tree."""

from ptspec import spec
from test_spec_builder import S2, step, ids
from kdiff_support import need_tree

M2 = 0x20_0000


def _blocks():
    """Two 2M blocks at 0x200000 and 0x400000 (a 4K, 48-bit table)."""
    s = S2(ia=48)
    return s.block(M2, 2, 0x1_0020_0000).block(2 * M2, 2, 0x1_0040_0000)


def _bbm(tlb):
    pre = _blocks()
    post = pre.copy().set(M2, 2, 0).set(2 * M2, 2, 0)
    raw_pre, raw_post = pre.raw(), post.raw(tlb=tlb)
    for r in (raw_pre, raw_post):
        r["kernel_version"] = "7.1.5"
    return spec.INVARIANTS["S2-BBM"](spec.load_state(raw_pre),
                                     spec.load_step(step("unmap", addr=0x3f_f800, size=0x1800)),
                                     spec.load_state(raw_post))


def test_the_logged_range_decides_what_s2_bbm_sees():
    """The same unmap removing both blocks: a range event as the hardware runs it (from the page
    holding addr) leaves the second block uninvalidated; the old log (from addr itself) reaches
    0x400800 and hid it."""
    tlbi_ipa = [("tlbi_ipa", M2, 2)]
    assert _bbm(tlbi_ipa + [("tlbi_range", 0x3f_f800, 0x1000)]) == []          # the old log
    vs = _bbm(tlbi_ipa + [("tlbi_range", 0x3f_f000, 0x1000)])                  # the hardware's
    assert ids(vs) == ["S2-BBM"] and "ipa 0x400000" in vs[0].message


def test_shim_logs_the_page_aligned_start_and_the_finding_counts_it():
    from ptspec.proofs.kernel.subject import subject_factory
    for version in ("6.12", "7.1"):
        h = subject_factory(need_tree(version))(12, 48, arena_pages=512, fwb=True, cmo=True)
        assert h.step("map", addr=M2, size=2 * M2, phys=0x1_0020_0000, prot=5) == (0, [])
        # aligned size: the walk and the TLBI both cover [0x3ff000, 0x400000) only
        assert h.step("unmap", addr=0x3f_f800, size=0x1000) == (0, [])
        assert ("tlbi_range", 0x3f_f000, 0x1000) in h._last_raw["tlb_log"]
        assert h.findings == {}
        # unaligned size: the walk reaches 0x401000 and removes the block at 0x400000, the
        # hardware's TLBI stops at 0x400000: the catalogued unmap-deferred-tlbi-short
        assert h.step("unmap", addr=0x3f_f800, size=0x1800) == (0, [])
        assert ("tlbi_range", 0x3f_f000, 0x1000) in h._last_raw["tlb_log"]
        assert h.pgt.get_leaf(2 * M2)[1] == 0
        assert h.findings == {"unmap-deferred-tlbi-short": 1}, h.findings
