"""ptspec.proofs.stage2.ptdump.render: ptdump-style text of a raw state."""

from ptspec.proofs.stage2.ptdump import render
from test_spec_builder import S2, table_desc

G1, G2 = 0x4000_0000, 0x20_0000


def sample():
    b = S2(cmo=True)
    b.block(G1, 2, 0x8000_0000).block(G1 + G2, 2, 0x8020_0000)
    for i in range(16):
        b.page(G1 + 2 * G2 + i * 0x1000, 0x9000_0000 + i * 0x1000, x=True)
    b.page(G1 + 2 * G2 + 0x10000, 0x9900_0000, device=True, w=False)
    b.owner(G1 + 3 * G2, 3, 1).owner(G1 + 3 * G2 + 0x1000, 3, 1)
    return b


def test_header_and_tables():
    text = render(sample().raw(), title="after map")
    lines = text.splitlines()
    assert lines[0] == "after map" and lines[1] == "=" * len("after map")
    assert lines[2].startswith("stage 2: 4K granule, ia_bits 40, start level 1, pa_bits 48, FWB off, CMO on")
    assert lines[3] == "roots: 0x40000000 0x40001000"
    assert "table 0x40000000 level 1 ipa 0x0 refcount 2 counted 1 (root)" in lines
    assert any(l.startswith("table ") and "level 3 ipa 0x40400000 refcount 18 counted 17" in l for l in lines)


def test_runs_are_merged_and_holes_omitted():
    text = render(sample().raw())
    leaves = [l for l in text.splitlines() if l.startswith("0x")]
    assert leaves == [
        "0x0000000040000000-0x0000000040400000         4M PMD L2  RW- AF SH=IS BLK  NORMAL  -> 0x80000000",
        "0x0000000040400000-0x0000000040410000        64K PTE L3  RWX AF SH=IS PAGE NORMAL  -> 0x90000000",
        "0x0000000040410000-0x0000000040411000         4K PTE L3  R-- AF SH=IS PAGE DEVICE_nGnRE  -> 0x99000000",
        "0x0000000040600000-0x0000000040602000         8K PTE L3  INVALID owner=1",
    ]


def test_non_contiguous_output_splits_a_run():
    b = S2().page(G1, 0x8000_0000).page(G1 + 0x1000, 0x8800_0000)
    leaves = [l for l in render(b.raw()).splitlines() if l.startswith("0x")]
    assert len(leaves) == 2


def test_broken_states_render():
    b = sample()
    b.alloc()
    b.set(0x80_0000_0000, 1, table_desc(0x7000_0000))
    text = render(b.raw())
    assert "not reached from the roots" in text and "not followed" in text
    assert "roots: none" in render(S2(init=False).raw())


def test_64k_and_hyp():
    b = S2(ps=16, ia=48, pa_bits=52).block(1 << 29, 2, 0x000A_0000_0000_0000)
    text = render(b.raw())
    assert "64K granule" in text and "512M PMD L2" in text and "-> 0xa000000000000" in text
    h = S2(kind="arm64-hyp-s1", ia=48, start=0, nroots=1).block(G1, 2, 0x8000_0000)
    text = render(h.raw())
    assert text.startswith("hyp stage 1: 4K granule, va_bits 48, start level 0") and "BLK" in text
