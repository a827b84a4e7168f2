"""Version rules between 6.1 and 6.12 pinned by the trees stop 30 ran. relax_perms (6.2.12, 6.3.8,
6.4.4, 6.5.0, 6.6.63 and 6.7.3): -EAGAIN on a page with no valid leaf from 6.3
(RELAX_EAGAIN_SINCE; 6.2.12 still returns 0 and invalidates with level 0), the local invalidation
tlbi_ipa_nsh from 6.5 (LOCAL_RELAX_TLBI_SINCE; 6.4.4 invalidates everywhere), and the
invalidation on -EAGAIN from 6.7 (RETRY_TLBI_SINCE; 6.6 logs nothing). A map that changes only a
leaf's software bits stores them in place, with no TLBI and no CMO, from 6.10
(SW_BITS_STORE_SINCE; 6.9.0 breaks and remakes the leaf). On hand-built states, each boundary both
ways: a state of each version passes that version's behaviour and fails the neighbouring
version's. Before stop 30 the gates sat at 6.2, 6.6, 6.8 and 6.12 (the trees then run), and
6.2.12, 6.5.0, 6.7.3 and 6.10.0 were refuted for behaving as their own kernels do."""

from ptspec import spec
from ptspec.spec.stage2 import bbm, contracts_attr
from test_spec_builder import S2, R, W, EAGAIN, step, ids

SW0 = 1 << 55

G1 = 0x4000_0000


def judge(pre, post, version, tlb=(), ret=0, op="relax_perms", **args):
    a, b = pre.raw(), post.raw(tlb=tlb)
    a["kernel_version"] = b["kernel_version"] = version
    return spec.check_step(a, step(op, ret, **args), b)


def test_the_gates_are_where_the_kernels_changed():
    assert contracts_attr.RELAX_EAGAIN_SINCE == (6, 3, 0)
    assert bbm.LOCAL_RELAX_TLBI_SINCE == (6, 5, 0)
    assert contracts_attr.RETRY_TLBI_SINCE == (6, 7, 0)
    assert bbm.SW_BITS_STORE_SINCE == (6, 10, 0)


def test_no_valid_leaf_returns_0_until_6_3_and_eagain_from_it():
    empty = S2()
    args = dict(addr=G1, prot=R | W)
    zero_tlbi = [("tlbi_ipa", G1, 0)]           # 6.2.12: ret 0, TLBI with the walk data's level 0
    assert judge(empty, empty.copy(), "6.2.12", zero_tlbi, **args) == []
    assert ids(judge(empty, empty.copy(), "6.2.12", ret=EAGAIN, **args)) == ["C-RELAX-PERMS"]
    assert judge(empty, empty.copy(), "6.3.8", ret=EAGAIN, **args) == []
    assert ids(judge(empty, empty.copy(), "6.3.8", zero_tlbi, **args)) == ["C-RELAX-PERMS"]


def test_the_invalidation_is_local_from_6_5():
    ro = S2().page(G1, 0x8000_0000, w=False)
    rw = ro.copy().page(G1, 0x8000_0000)
    args = dict(addr=G1, prot=R | W)
    full, local = [("tlbi_ipa", G1, 3)], [("tlbi_ipa_nsh", G1, 3)]
    assert judge(ro, rw, "6.4.4", full, **args) == []
    assert "C-RELAX-PERMS" in ids(judge(ro, rw, "6.4.4", local, **args))
    assert "S2-BBM" in ids(judge(ro, rw, "6.4.4", local, **args))     # nsh is not enough before
    assert judge(ro, rw, "6.5.0", local, **args) == []
    assert ids(judge(ro, rw, "6.5.0", full, **args)) == ["C-RELAX-PERMS"]


def test_eagain_invalidates_from_6_7():
    empty = S2()
    args = dict(addr=G1, prot=R | W)
    retry = [("tlbi_ipa_nsh", G1, 3)]
    assert judge(empty, empty.copy(), "6.6.63", ret=EAGAIN, **args) == []
    assert ids(judge(empty, empty.copy(), "6.6.63", retry, ret=EAGAIN, **args)) == ["C-RELAX-PERMS"]
    assert judge(empty, empty.copy(), "6.7.3", retry, ret=EAGAIN, **args) == []
    assert ids(judge(empty, empty.copy(), "6.7.3", ret=EAGAIN, **args)) == ["C-RELAX-PERMS"]
    # 6.7.3's u32 level left uninitialised (0xfefefefe in the userspace build): the catalogued
    # relax-perms-eagain-level's own message, from 6.7 on
    vs = judge(empty, empty.copy(), "6.7.3", [("tlbi_ipa_nsh", G1, 0xFEFEFEFE)], ret=EAGAIN, **args)
    assert ids(vs) == ["C-RELAX-PERMS"] and "the walk never set the level it passes" in str(vs[0])


def test_a_software_bits_only_map_is_stored_in_place_from_6_10():
    pre = S2(cmo=True).page(G1, 0x8000_0000)
    post = pre.copy().page(G1, 0x8000_0000, sw=1)
    args = dict(op="map", addr=G1, size=0x1000, phys=0x8000_0000, prot=R | W | SW0,
                force_pte=False)
    remade = [("tlbi_ipa", G1, 3), ("dcache", 0x8000_0000, 0x1000)]     # 6.9: break, clean, make
    assert judge(pre, post, "6.10.0", **args) == []
    assert ids(judge(pre, post, "6.9.0", **args)) == ["C-CMO", "S2-BBM"]
    assert judge(pre, post, "6.9.0", remade, **args) == []
