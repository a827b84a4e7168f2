"""The reworked walker's statements (spec/stage2/mainline.py) and the version-parameterised parts of
S2-BBM and C-RELAX-PERMS, on hand-built states: each must fail on a planted bug and accept the
kernel's behaviour of its version. No kernel tree needed."""

from ptspec import spec
from ptspec.spec.stage2 import mainline as ML
from test_spec_builder import S2, RW, EAGAIN, ENOMEM, leaf, step, ids, table_desc

AF = 1 << 10
LOCK = 1 << 10


def raw(b, version=None, tlb=(), **extra):
    out = b.raw(tlb=tlb)
    if version:
        out["kernel_version"] = version
    out.update(extra)
    return out


def contract(pre, st, post):
    return spec.check_step(pre, st, post)


def mapped():
    b = S2(field=(9, 2))
    b.memcache = []
    for i in range(4):
        b.page(0x4000_0000 + i * 0x1000, 0x8000_0000 + i * 0x1000)
    b.block(0x4020_0000, 2, 0x9000_0000)
    return b


# -- the locked-PTE marker, by version ---------------------------------------------------------

def test_lock_marker_by_version():
    assert ML.lock_marker("6.1.176") is None
    assert ML.lock_marker("6.3.8") == (1 << 10, 1 << 10)
    assert ML.lock_marker("6.12.19") == (1 << 10, 1 << 10)
    assert ML.lock_marker("7.1.5") == (0xF << 60, 1 << 60)


def test_s2_locked_left_behind_is_caught():
    b = mapped()
    assert ML.check_locked(raw(b, "6.6.63")) == []
    left = b.copy().set(0x4000_1000, 3, LOCK)           # the break's marker never replaced
    vs = ML.check_locked(raw(left, "6.6.63"))
    assert ids(vs) == ["S2-LOCKED"] and "still holds the locked-PTE marker 0x400" in vs[0].message
    # before 6.2 there is no marker: the same bit is not judged
    assert ML.check_locked(raw(left, "6.1.176")) == []
    # 7.1's marker is a type in bits 63:60: bit 10 alone is an annotation, not the marker
    assert ML.check_locked(raw(left, "7.1.5")) == []
    typed = b.copy().set(0x4000_1000, 3, 1 << 60)
    assert ids(ML.check_locked(raw(typed, "7.1.5"))) == ["S2-LOCKED"]


def test_s2_locked_stored_valid_is_caught():
    b = mapped()
    ok = raw(b, "6.3.8", pte_locks=[[0x1000, LOCK]])
    assert ML.check_locked(ok) == []
    bad = raw(b, "6.3.8", pte_locks=[[0x1000, LOCK | 1]])
    vs = ML.check_locked(bad)
    assert ids(vs) == ["S2-LOCKED"] and "stored as a valid descriptor" in vs[0].message


# -- S2-RCU: unlinked tables --------------------------------------------------------------------

def test_s2_rcu_live_table_freed_is_caught():
    pre = mapped()
    table = pre.slot(0x4000_0000, 3)[0]                 # the level-3 table of the pages
    assert ML.check_unlinked(raw(pre), raw(pre, unlinked_freed=[[table, 3]]))[0].inv == "S2-RCU"
    post = pre.copy()
    post.drop_table(0x4000_0000, 2)                      # unlinked and freed: fine
    assert ML.check_unlinked(raw(pre), raw(post, unlinked_freed=[[table, 3]])) == []
    kept = pre.copy()
    pa, idx = kept.slot(0x4000_0000, 2)
    kept.pages[pa][idx] = 0                              # unlinked, but its page still allocated
    vs = ML.check_unlinked(raw(pre), raw(kept, unlinked_freed=[[table, 3]]))
    assert ids(vs) == ["S2-RCU"] and "left 1 page(s) of it allocated" in vs[0].message
    vs = ML.check_unlinked(raw(pre), raw(post, unlinked_freed=[[0x77_0000_0000, 3]]))
    assert "not a table page before the step" in vs[0].message


# -- S2-BBM: range TLBI, TTL unknown, local TLBI for relax_perms -------------------------------

def _bbm(pre, op, post, tlb, version=None, **args):
    return spec.INVARIANTS["S2-BBM"](spec.load_state(raw(pre, version)),
                                     spec.load_step(step(op, **args)),
                                     spec.load_state(raw(post, version, tlb=tlb)))


def test_bbm_accepts_a_covering_range_tlbi_only():
    pre = mapped()
    post = pre.copy().set(0x4000_1000, 3, 0).set(0x4000_2000, 3, 0)
    args = dict(addr=0x4000_1000, size=0x2000)
    assert ids(_bbm(pre, "unmap", post, [], **args)) == ["S2-BBM"]
    assert _bbm(pre, "unmap", post, [("tlbi_range", 0x4000_1000, 0x2000)], **args) == []
    short = _bbm(pre, "unmap", post, [("tlbi_range", 0x4000_1000, 0x1000)], **args)
    assert ids(short) == ["S2-BBM"] and "0x40002000" in short[0].message
    assert _bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_1000, 0x7FFFFFFF),
                                      ("tlbi_ipa", 0x4000_2000, 0x7FFFFFFF)], **args) == []


def test_bbm_local_tlbi_only_for_relax_perms_from_6_6():
    pre = mapped()
    post = pre.copy().page(0x4000_0000, 0x8000_0000, x=True)
    nsh = [("tlbi_ipa_nsh", 0x4000_0000, 3)]
    assert _bbm(pre, "relax_perms", post, nsh, "6.6.63", addr=0x4000_0000, prot=1) == []
    assert ids(_bbm(pre, "relax_perms", post, nsh, "6.3.8", addr=0x4000_0000, prot=1)) == ["S2-BBM"]
    gone = pre.copy().set(0x4000_0000, 3, 0)
    assert ids(_bbm(pre, "unmap", gone, nsh, "6.6.63", addr=0x4000_0000, size=0x1000)) == ["S2-BBM"]


# -- C-RELAX-PERMS by version -------------------------------------------------------------------

def test_relax_perms_without_a_leaf_by_version():
    b = mapped()
    hole = dict(addr=0x4010_0000, prot=RW)
    st = step("relax_perms", ret=EAGAIN, **hole)
    assert contract(raw(b, "6.3.8"), st, raw(b, "6.3.8")) == []
    assert "C-RELAX-PERMS" in ids(contract(raw(b), st, raw(b)))              # 6.1: returns 0
    assert "C-RELAX-PERMS" in ids(contract(raw(b, "6.3.8"), step("relax_perms", ret=0, **hole),
                                           raw(b, "6.3.8")))
    good = [("tlbi_ipa_nsh", 0x4010_0000, 0x7FFFFFFF)]
    assert contract(raw(b, "6.12.19"), st, raw(b, "6.12.19", tlb=good)) == []
    bad = contract(raw(b, "6.12.19"), st, raw(b, "6.12.19", tlb=[("tlbi_ipa_nsh", 0x4010_0000, 120)]))
    assert ids(bad) == ["C-RELAX-PERMS"] and "level hint 120" in str(bad[0])
    assert ids(contract(raw(b, "6.12.19"), st, raw(b, "6.12.19"))) == ["C-RELAX-PERMS"]


# -- C-TEST-CLEAR-YOUNG --------------------------------------------------------------------------

def test_test_clear_young_reports_and_clears():
    pre = mapped()
    args = dict(addr=0x4000_0000, size=0x2000)
    post = pre.copy().set(0x4000_0000, 3, leaf(0x8000_0000, 3) & ~AF)
    post.set(0x4000_1000, 3, leaf(0x8000_1000, 3) & ~AF)
    ok = step("test_clear_young", ret=1, out={"young": True}, mkold=1, **args)
    assert contract(raw(pre), ok, raw(post)) == []
    # reads only without mkold
    ro = step("test_clear_young", ret=1, out={"young": True}, mkold=0, **args)
    assert contract(raw(pre), ro, raw(pre)) == []
    assert "C-TEST-CLEAR-YOUNG" in ids(contract(raw(pre), ro, raw(post)))
    # planted: one leaf left young, a wrong answer, a neighbour cleared
    half = pre.copy().set(0x4000_0000, 3, leaf(0x8000_0000, 3) & ~AF)
    assert "C-TEST-CLEAR-YOUNG" in ids(contract(raw(pre), ok, raw(half)))
    wrong = step("test_clear_young", ret=0, out={"young": False}, mkold=1, **args)
    assert "C-TEST-CLEAR-YOUNG" in ids(contract(raw(pre), wrong, raw(post)))
    over = post.copy().set(0x4000_2000, 3, leaf(0x8000_2000, 3) & ~AF)
    assert "C-TEST-CLEAR-YOUNG" in ids(contract(raw(pre), ok, raw(over)))
    # an unmapped range is not young
    none = step("test_clear_young", ret=0, out={"young": False}, mkold=1, addr=0x4010_0000,
                size=0x1000)
    assert contract(raw(pre), none, raw(pre)) == []


# -- C-SPLIT -------------------------------------------------------------------------------------

def _split_of(pre, ipa, oa, mc_page):
    """pre with the 2M block at ipa replaced by a level-3 table of pages (from the memcache)."""
    post = pre.copy()
    post.memcache = [p for p in post.memcache if p != mc_page]
    pa, idx = post.slot(ipa, 2)
    post.pages[pa][idx] = table_desc(mc_page)
    post.pages[mc_page] = [leaf(oa + i * 0x1000, 3) for i in range(512)]
    return post


def test_split_same_translations_pages_and_memcache():
    pre = mapped()
    pre.memcache = [0x7000_0000, 0x7000_1000]
    post = _split_of(pre, 0x4020_0000, 0x9000_0000, 0x7000_0000)
    args = dict(addr=0x4020_0000, size=0x20_0000)
    tlb = [("tlbi_ipa", 0x4020_0000, 2)]
    assert contract(raw(pre), step("split", **args), raw(post, tlb=tlb)) == []
    # planted: a page moved
    moved = post.copy().page(0x4020_5000, 0xA000_0000)
    assert "C-SPLIT" in ids(contract(raw(pre), step("split", **args), raw(moved, tlb=tlb)))
    # planted: a permission lost
    ro = post.copy().page(0x4020_5000, 0x9000_5000, w=False)
    assert "C-SPLIT" in ids(contract(raw(pre), step("split", **args), raw(ro, tlb=tlb)))
    # planted: returned 0 with the block still there
    vs = contract(raw(pre), step("split", **args), raw(pre))
    assert "C-SPLIT" in ids(vs) and any("still a level-2 block" in str(v) for v in vs)
    # planted: the memory type lost (what 6.6-7.1's split does to a device block)
    dev = pre.copy().block(0x4020_0000, 2, 0x9000_0000, device=True)
    vs = contract(raw(dev), step("split", **args), raw(post, tlb=tlb))
    assert any("the memory type changed (MemAttr 0x1 -> 0xf)" in str(v) for v in vs)
    # AF may be gained (an old block splits into young pages), not lost
    old = pre.copy().block(0x4020_0000, 2, 0x9000_0000, af=False)
    assert contract(raw(old), step("split", **args), raw(post, tlb=tlb)) == []
    cold = post.copy().page(0x4020_5000, 0x9000_5000, af=False)
    assert "C-SPLIT" in ids(contract(raw(pre), step("split", **args), raw(cold, tlb=tlb)))
    # -ENOMEM with nothing done is allowed
    assert contract(raw(pre), step("split", ret=ENOMEM, **args), raw(pre)) == []


def test_split_charged_outside_the_memcache_is_caught():
    pre = mapped()
    pre.memcache = [0x7000_1000]
    post = _split_of(pre, 0x4020_0000, 0x9000_0000, 0x7000_0000)      # not a memcache page
    post.memcache = [0x7000_1000]
    vs = contract(raw(pre), step("split", addr=0x4020_0000, size=0x20_0000),
                  raw(post, tlb=[("tlbi_ipa", 0x4020_0000, 2)]))
    assert any("outside the memcache" in str(v) for v in vs)


# -- S2-TABLE-TLBI -------------------------------------------------------------------------------

def test_table_freed_before_its_tlbi_is_caught():
    pre = mapped()
    table = pre.slot(0x4000_0000, 3)[0]
    post = pre.copy()
    post.drop_table(0x4000_0000, 2)
    st = step("unmap", addr=0x4000_0000, size=0x20_0000)
    before = [("tlbi_ipa", 0x4000_0000, 0x7FFFFFFF)]
    ok = raw(post, tlb=before, pages_freed=[[table, 1]])
    assert ML.check_table_tlbi(raw(pre), st, ok) == []
    late = raw(post, tlb=[("tlbi_range", 0x4000_0000, 0x20_0000)], pages_freed=[[table, 0]])
    vs = ML.check_table_tlbi(raw(pre), st, late)
    assert ids(vs) == ["S2-TABLE-TLBI"] and "one comes after the free" in vs[0].message
    elsewhere = raw(post, tlb=[("tlbi_ipa", 0x4040_0000, 3)], pages_freed=[[table, 1]])
    assert ids(ML.check_table_tlbi(raw(pre), st, elsewhere)) == ["S2-TABLE-TLBI"]
    # a VMID-wide invalidation covers it; destroy is exempt
    assert ML.check_table_tlbi(raw(pre), st, raw(post, tlb=[("tlbi_vmid",)],
                                                  pages_freed=[[table, 1]])) == []
    assert ML.check_table_tlbi(raw(pre), step("destroy"), late) == []


def test_bbm_software_bits_only_change_needs_no_tlbi_from_6_12():
    pre = mapped()
    post = pre.copy().page(0x4000_0000, 0x8000_0000, sw=1)
    args = dict(addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=RW | (1 << 55),
                force_pte=False)
    assert _bbm(pre, "map", post, [], "6.12.19", **args) == []
    assert ids(_bbm(pre, "map", post, [], "6.6.63", **args)) == ["S2-BBM"]
    # anything more than the software bits still needs one
    more = pre.copy().page(0x4000_0000, 0x8000_0000, sw=1, w=False)
    assert ids(_bbm(pre, "map", more, [], "6.12.19", **args)) == ["S2-BBM"]


def test_cmo_software_bits_only_change_is_not_a_new_leaf_from_6_12():
    pre = mapped()
    pre.cmo = True
    post = pre.copy().page(0x4000_0000, 0x8000_0000, sw=1)
    st = step("map", addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=RW | (1 << 55),
              force_pte=False)
    from ptspec.spec.stage2.cmo import check_cmo
    assert check_cmo(spec.load_state(raw(pre, "6.12.19")), spec.load_step(st),
                     spec.load_state(raw(post, "6.12.19"))) == []
    assert ids(check_cmo(spec.load_state(raw(pre, "6.6.63")), spec.load_step(st),
                         spec.load_state(raw(post, "6.6.63")))) == ["C-CMO"]


# -- 7.1: typed owner annotations, relax_perms' XN, mkyoung's void ---------------------------------

DONATION = 2 << 60          # KVM_HOST_INVALID_PTE_TYPE_DONATION in bits 63:60


def annotated(desc):
    b = S2(field=(3, 1))
    b.memcache = []
    b.page(0x4000_0000, 0x8000_0000)
    b.set(0x4000_1000, 3, desc)
    return b


def test_owner_annotation_is_typed_from_7_1():
    from ptspec.spec.arch import descriptor as D
    assert D.owner_tag(None) == 0 and D.owner_tag((6, 12, 19)) == 0
    assert D.owner_tag((7, 1, 5)) == DONATION
    good = annotated(DONATION | 1 << 1)
    assert spec.check_state(raw(good, "7.1.5")) == []
    # the same descriptor is no annotation before 7.1 (bits outside the owner field)
    assert "S2-OWN" in ids(spec.check_state(raw(good, "6.12.19")))
    # planted: the type left out, the lock type, a typed owner 0, an id above the top
    for bad in (1 << 1, 1 << 60 | 1 << 1, DONATION, DONATION | 2 << 1):
        assert "S2-OWN" in ids(spec.check_state(raw(annotated(bad), "7.1.5"))), hex(bad)
    # the plain statement and the optimised one agree on typed annotations too
    from ptspec.spec.stage2 import ownership as O
    from ptspec.spec.stage2.state import load_state
    for d in (DONATION | 1 << 1, 1 << 1, 1 << 60 | 1 << 1, DONATION, DONATION | 2 << 1, 3 << 60 | 2):
        for version in ("7.1.5", "6.12.19"):
            st = load_state(raw(annotated(d), version))
            assert ([str(v) for v in O.own_violations_plain(st)] ==
                    [str(v) for v in O.s2_own(st)]), (hex(d), version)


def test_set_owner_writes_the_typed_annotation_from_7_1():
    pre = S2(field=(3, 1))
    pre.memcache = []
    pre.page(0x4000_0000, 0x8000_0000)
    st = step("set_owner", addr=0x4000_1000, size=0x1000, owner_id=1)
    good = pre.copy()
    good.set(0x4000_1000, 3, DONATION | 1 << 1)
    assert contract(raw(pre, "7.1.5"), st, raw(good, "7.1.5")) == []
    untyped = pre.copy()
    untyped.set(0x4000_1000, 3, 1 << 1)
    assert "C-SET-OWNER" in ids(contract(raw(pre, "7.1.5"), st, raw(untyped, "7.1.5")))
    assert "C-SET-OWNER" in ids(contract(raw(pre, "6.12.19"), st, raw(good, "6.12.19")))


def test_relax_perms_sets_xn_for_a_prot_without_x_from_7_1():
    pre = S2(field=(3, 1))
    pre.memcache = []
    pre.page(0x4000_0000, 0x8000_0000, w=False, x=True)
    st = step("relax_perms", addr=0x4000_0000, prot=RW)
    tlb = [("tlbi_ipa_nsh", 0x4000_0000, 3)]
    relaxed_x = pre.copy().page(0x4000_0000, 0x8000_0000, x=True)     # W added, still executable
    relaxed_xn = pre.copy().page(0x4000_0000, 0x8000_0000, x=False)   # W added, XN set
    assert contract(raw(pre, "6.12.19"), st, raw(relaxed_x, "6.12.19", tlb=tlb)) == []
    assert "C-RELAX-PERMS" in ids(contract(raw(pre, "6.12.19"), st, raw(relaxed_xn, "6.12.19", tlb=tlb)))
    assert contract(raw(pre, "7.1.5"), st, raw(relaxed_xn, "7.1.5", tlb=tlb)) == []
    assert "C-RELAX-PERMS" in ids(contract(raw(pre, "7.1.5"), st, raw(relaxed_x, "7.1.5", tlb=tlb)))


def test_mkyoung_returns_nothing_from_7_1():
    pre = S2(field=(3, 1))
    pre.memcache = []
    pre.page(0x4000_0000, 0x8000_0000, af=False)
    post = pre.copy().page(0x4000_0000, 0x8000_0000, af=True)
    old = leaf(0x8000_0000, 3, af=False)
    assert contract(raw(pre, "7.1.5"), step("mkyoung", ret=0, out={"pte": 0}, addr=0x4000_0000),
                    raw(post, "7.1.5")) == []
    assert "C-MKYOUNG" in ids(contract(raw(pre, "7.1.5"), step("mkyoung", ret=old, out={"pte": old},
                                                               addr=0x4000_0000), raw(post, "7.1.5")))
    assert contract(raw(pre, "6.12.19"), step("mkyoung", ret=old, out={"pte": old}, addr=0x4000_0000),
                    raw(post, "6.12.19")) == []
    # still judged: AF not set is caught on 7.1 too
    assert "C-MKYOUNG" in ids(contract(raw(pre, "7.1.5"), step("mkyoung", ret=0, out={"pte": 0},
                                                               addr=0x4000_0000), raw(pre, "7.1.5")))
