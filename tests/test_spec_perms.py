"""MS-PERM (spec/mmu/perms.py): every R/W/X a stage-2 leaf grants is justified page by page.

Good states come from the fault path itself (a harness run); bad ones are those states with one
fact changed: a permission bit set, a ghost record (``fetched``, ``dic``) taken away, a host or
memslot fact changed. Also: the ghost keys are validated, old states without them still load, and
MS judges every pfn of a host leaf (not only its first).
"""


import pytest
from program_support import editable

from ptspec.proofs.mmu.harness import VmHarness
from ptspec.proofs.mmu.layouts import LOG, make_layout
from ptspec.spec.arch import descriptor as D
from ptspec.spec.mmu.invariants import check_mmu_state, check_ms
from ptspec.spec.mmu.perms import check_perms, covered
from ptspec.spec.mmu.state import MmuView
from ptspec.spec.stage2.state import StateError

G = 0x1_0000_0000
P = 0x1000


def ids(vs):
    return {str(v).split()[0] for v in vs}


def run(layout, *accesses):
    h = VmHarness(layout)
    for ipa, kind in accesses:
        h.step("access", ipa=ipa, kind=kind)
    assert h.violations == []
    raw = h.raw_state()
    assert check_mmu_state(raw) == []
    return raw


def set_bits(raw, ipa, on=0, off=0):
    """The state with the descriptor of the leaf at ipa changed (bits on set, bits off cleared)."""
    raw = editable(raw)
    leaf = MmuView(raw).leaf_at(ipa)
    assert leaf is not None
    for words in raw["pages"].values():
        for i, w in enumerate(words):
            if w == leaf.desc:
                words[i] = (w | on) & ~off
    return raw


def perm_msgs(raw):
    return [str(v) for v in check_perms(MmuView(raw))]


@pytest.fixture(scope="module")
def exec_block():
    """A THP block made executable by one instruction fetch: fetched holds the whole block."""
    raw = run(make_layout(backing="thp", nblocks=1), (G + P, "exec"))
    view = MmuView(raw)
    assert raw["mmu"]["memslots"][0]["fetched"] == [[0, 512, view.oa(view.leaf_at(G).desc)]]
    assert not view.leaf_at(G).desc & D.XN
    return raw


def grants(raw, *ranges):
    """fetched ranges [g, n] of slot 0, each at the address the state maps gfn offset g to."""
    view = MmuView(raw)
    out = []
    for g, n in ranges:
        leaf = view.leaf_at(G + g * P)
        out.append([g, n, view.oa(leaf.desc) + (G + g * P - leaf.ipa)])
    return out


@pytest.fixture(scope="module")
def pages():
    """Small pages: one fetched, one written, one read; the slot is not logging."""
    return run(make_layout(backing="anon", nblocks=1),
               (G + P, "exec"), (G + 2 * P, "write"), (G + 3 * P, "read"))


def test_fetch_block_is_justified_and_without_the_record_it_is_not(exec_block):
    assert check_perms(MmuView(exec_block)) == []
    raw = editable(exec_block)
    raw["mmu"]["memslots"][0]["fetched"] = []
    assert ids(check_mmu_state(raw)) == {"MS-PERM"}
    assert "is executable but no instruction fetch" in perm_msgs(raw)[0]


def test_a_block_over_one_fetched_page_is_a_violation(exec_block):
    raw = editable(exec_block)
    slot = raw["mmu"]["memslots"][0]
    slot["fetched"] = grants(raw, (1, 1))                       # the fetch was granted one page
    msgs = perm_msgs(raw)
    assert len(msgs) == 1 and "gfn 0x100000 is executable" in msgs[0], msgs
    slot["fetched"] = grants(raw, (0, 1), (1, 300), (301, 211))   # every page fetched
    assert perm_msgs(raw) == []
    slot["fetched"] = grants(raw, (0, 1), (1, 300), (302, 210))   # gfn 301 missing
    assert "gfn 0x10012d is executable" in perm_msgs(raw)[0]
    slot["fetched"] = grants(raw, (0, 512))
    slot["fetched"][0][2] += 0x200000          # granted while it translated elsewhere: stale
    assert "gfn 0x100000 is executable" in perm_msgs(raw)[0]


def test_exec_on_a_page_nobody_fetched(pages):
    assert check_perms(MmuView(pages)) == []
    for ipa in (G + 2 * P, G + 3 * P):
        raw = set_bits(pages, ipa, off=D.XN)
        assert ids(check_mmu_state(raw)) == {"MS-PERM"}, ipa
    raw = set_bits(pages, G + 3 * P, off=D.XN)
    raw["mmu"]["dic"] = True                  # with DIC, user_mem_abort maps normal memory X
    assert check_mmu_state(raw) == []


def test_device_memory_is_never_executable():
    h = VmHarness(make_layout(backing="anon", nblocks=1))
    h.step("ioremap", ipa=0x800000, pa=0x9000000, size=P, writable=True)
    raw = h.raw_state()
    assert check_mmu_state(raw) == []
    bad = set_bits(raw, 0x800000, off=D.XN)
    bad["mmu"]["dic"] = True
    assert ids(check_mmu_state(bad)) == {"MS-PERM"}
    assert "executable device memory" in perm_msgs(bad)[0]
    ro = editable(raw)
    ro["mmu"]["ioremap"][0][3] = False
    assert any("requested read-only" in m for m in perm_msgs(ro))


def test_write_needs_slot_vma_host_and_a_logged_write(pages):
    raw = editable(pages)
    raw["mmu"]["vmas"][0]["writable"] = False          # no VM_WRITE (the host leaf still says w)
    assert ids(check_mmu_state(raw)) == {"MS-PERM"}
    assert "no VM_WRITE VMA" in perm_msgs(raw)[0]
    raw = editable(pages)
    raw["mmu"]["memslots"][0]["flags"] = 2             # read-only slot: MS says so too
    assert "MS-PERM" in ids(check_mmu_state(raw))
    raw = editable(pages)
    raw["mmu"]["memslots"][0]["flags"] = LOG          # logging, and no write was logged
    raw["mmu"]["memslots"][0]["dirty_bitmap"] = 0
    assert any("before a write fault for it was logged" in m for m in perm_msgs(raw))
    raw["mmu"]["memslots"][0]["dirty_bitmap"] = (1 << 512) - 1
    assert perm_msgs(raw) == []
    raw = set_bits(pages, G + 3 * P, on=D.S2AP_W)      # read fault, then W: the host allowed it
    assert perm_msgs(raw) == []


def test_no_access_without_host_backing(pages):
    raw = editable(pages)
    raw["mmu"]["host_map"] = []
    msgs = perm_msgs(raw)
    assert msgs and all("has no host page" in m for m in msgs), msgs


def test_ghost_keys_are_validated_and_optional(pages):
    for change, where in (
            (lambda m: m["memslots"][0].__setitem__("fetched", [[512, 1, 0]]), "fetched[0][0]"),
            (lambda m: m["memslots"][0].__setitem__("fetched", [[500, 13, 0]]), "fetched[0][1]"),
            (lambda m: m["memslots"][0].__setitem__("fetched", [[1, 1, 8]]), "fetched[0][2]"),
            (lambda m: m["memslots"][0].__setitem__("fetched", [[1, 1, -P]]), "fetched[0][2]"),
            (lambda m: m["memslots"][0].__setitem__("fetched", [[1, 1]]), "fetched[0]"),
            (lambda m: m["memslots"][0].__setitem__("fetched", 3), "fetched"),
            (lambda m: m.__setitem__("dic", 1), "mmu.dic"),
            (lambda m: m["host_map"][0].__setitem__(1, P + 8), "host_map[0][1]"),
            (lambda m: m["host_map"][0].__setitem__(0, m["host_map"][0][0] + 8), "host_map[0][0]")):
        raw = editable(pages)
        change(raw["mmu"])
        with pytest.raises(StateError, match=r"mmu\.") as e:
            MmuView(raw)
        assert where in str(e.value), (where, e.value)
    old = editable(pages)                       # a state written before the ghost keys
    del old["mmu"]["dic"]
    for s in old["mmu"]["memslots"]:
        del s["fetched"]
    view = MmuView(old)
    assert view.dic is False and view.slots[0].fetched == []
    assert ids(check_mmu_state(old)) == {"MS-PERM"}   # the fetched page is no longer justified


def test_covered():
    assert covered([], 0, 4) == 0
    assert covered([(0, 2), (2, 4)], 0, 4) is None
    assert covered([(0, 2), (3, 4)], 0, 4) == 2
    assert covered([(0, 1), (0, 8)], 2, 4) is None
    assert covered([(5, 8)], 2, 4) == 2


def test_ms_judges_every_pfn_of_a_host_leaf(exec_block):
    """A THP whose second half lies beyond RAM: MS used to judge the host leaf by its first pfn."""
    raw = editable(exec_block)
    head = raw["mmu"]["host_map"][0][2]
    raw["mmu"]["ram_pfns"] = [head - 16, head + 256]
    msgs = [str(v) for v in check_ms(MmuView(raw))]
    assert any("normal attributes over non-RAM pfn " + hex(head + 256) in m for m in msgs), msgs
    raw["mmu"]["ram_pfns"] = [head + 256, head + 4096]
    msgs = [str(v) for v in check_ms(MmuView(raw))]
    assert any(hex(head) in m for m in msgs), msgs
    raw["mmu"]["ram_pfns"] = [head, head + 512]
    assert check_ms(MmuView(raw)) == []


def test_a_grant_ends_when_the_host_replaces_the_page():
    """Fetch a page, the host zaps it, a read faults it back in (at a new pfn): X on it now would
    be justified by nothing, and the grant recorded for the old page does not count."""
    h = VmHarness(make_layout(backing="anon", nblocks=1))
    uaddr = h.layout["slots"][0]["uaddr"]
    h.step("access", ipa=G + P, kind="exec")
    old = MmuView(h.raw_state()).leaf_at(G + P)
    h.step("zap", hva=uaddr + P, size=P)
    h.step("access", ipa=G + P, kind="read")
    assert h.violations == []
    raw = h.raw_state()
    new = MmuView(raw).leaf_at(G + P)
    assert new.desc & D.XN and MmuView(raw).oa(new.desc) != MmuView(raw).oa(old.desc)
    assert ids(check_mmu_state(set_bits(raw, G + P, off=D.XN))) == {"MS-PERM"}


def test_guest_forgets_fetches_of_a_moved_slot():
    h = VmHarness(make_layout(backing="anon", nblocks=1))
    h.step("access", ipa=G + P, kind="exec")
    view = MmuView(h.raw_state())
    grant = (1, 1, view.oa(view.leaf_at(G + P).desc))
    assert h.guest.fetched == {0: {grant}}
    s = h.layout["slots"][0]
    h.step("set_memory_region", slot=0, flags=LOG, guest_phys_addr=s["gpa"],
           memory_size=s["size"], userspace_addr=s["uaddr"])        # flags only: kept
    assert h.guest.fetched == {0: {grant}}
    h.step("set_memory_region", slot=0, flags=0, guest_phys_addr=s["gpa"] + 0x200000,
           memory_size=s["size"], userspace_addr=s["uaddr"])        # moved: forgotten
    assert h.guest.fetched == {} and h.violations == []
