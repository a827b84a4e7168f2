"""load_state / load_step: validation, normalisation and the messages a reader gets."""

import pytest

from ptspec import spec
from ptspec.spec import StateError, load_state
from ptspec.spec.stage2.step import load_step, walked_range
from test_spec_builder import S2, step


def raw():
    return S2().page(0x1000, 0x8000_1000).raw()


def err(obj):
    with pytest.raises(StateError) as exc:
        load_state(obj)
    return str(exc.value)


def test_load_ints_and_hex_strings_agree():
    b = S2().page(0x1000, 0x8000_1000).owner(0x2000, 3, 1)
    a, h = load_state(b.raw()), load_state(b.raw(hexa=True))
    assert a.pages == h.pages and a.refcount == h.refcount and a.roots == h.roots
    assert all(isinstance(k, int) for k in h.pages) and all(isinstance(d, int) for d in h.pages[h.roots[0]])
    assert a.kind == "arm64-stage2" and a.page_shift == 12 and a.ia_bits == 40 and a.start_level == 1


def test_optional_keys_default():
    r = raw()
    for key in ("pa_bits", "has_fwb", "cmo", "memcache", "free_pages", "pool_errors", "tlb_log"):
        del r[key]
    st = load_state(r)
    assert (st.pa_bits, st.has_fwb, st.cmo, st.memcache, st.free_pages, st.pool_errors, st.tlb_log) == \
        (48, False, False, (), None, (), [])


def test_state_is_returned_unchanged_and_copies_descriptors():
    r = raw()
    st = load_state(r)
    assert load_state(st) is st
    root = r["roots"][0]
    r["pages"][str(root)][0] = 12345
    assert st.pages[root][0] != 12345


def test_missing_key():
    r = raw()
    del r["ia_bits"]
    assert err(r).startswith("ia_bits: missing")


def test_bad_length_message():
    r = S2().raw(hexa=True)
    key = next(iter(r["pages"]))
    r["pages"][key] = ["0x0"] * 3
    assert err(r) == f"pages['{key}']: expected 512 descriptors, got 3"


def test_bad_hex_message():
    r = S2().raw(hexa=True)
    key = next(iter(r["pages"]))
    r["pages"][key][5] = "0xzz"
    assert err(r) == f"pages['{key}'][5]: expected an integer or hex string, got '0xzz'"


def test_descriptor_out_of_range():
    r = raw()
    key = next(iter(r["pages"]))
    r["pages"][key][7] = 1 << 64
    assert f"pages['{key}'][7]" in err(r) and "above" in err(r)
    r["pages"][key][7] = -1
    assert f"pages['{key}'][7]" in err(r)


@pytest.mark.parametrize("key,value,needle", [
    ("kind", "x86", "kind: expected one of"),
    ("page_shift", 13, "page_shift: expected 12, 14 or 16, got 13"),
    ("ia_bits", 60, "ia_bits: 60 is above 52"),
    ("ia_bits", True, "ia_bits: expected an integer, got True"),
    ("start_level", 4, "start_level: 4 is above 3"),
    ("pa_bits", 40, "pa_bits: expected 48 or 52, got 40"),
    ("owner_field", [2, 9], "owner_field: hi 2 is below lo 9"),
    ("owner_field", [63], "owner_field: expected [hi, lo]"),
    ("max_owner_id", 256, "max_owner_id"),
    ("has_fwb", 1, "has_fwb: expected true or false, got 1"),
    ("roots", "0x1000", "roots: expected a list"),
    ("roots", ["zz"], "roots[0]: expected an integer or hex string, got 'zz'"),
    ("pages", [], "pages: expected an object"),
    ("tlb_log", [["tlbi_all"]], "tlb_log[0]: unknown event 'tlbi_all'"),
    ("tlb_log", [["tlbi_ipa", 4096]], "tlb_log[0]: tlbi_ipa takes 2 operand(s), got 1"),
    ("tlb_log", [["dcache", "0x1000", "bad"]], "tlb_log[0][2]: expected an integer or hex string"),
    ("pool_errors", [3], "pool_errors[0]: expected a string"),
])
def test_field_errors(key, value, needle):
    r = raw()
    r[key] = value
    assert needle in err(r)


def test_refcount_must_match_pages():
    r = raw()
    r["refcount"].pop(next(iter(r["refcount"])))
    assert "refcount: no entry for page" in err(r)
    r = raw()
    r["refcount"]["0x123000"] = 1
    assert err(r) == "refcount['0x123000']: page 0x123000 is not in pages"


def test_page_key_errors():
    r = raw()
    r["pages"]["0x1001"] = [0] * 512
    assert "0x1001 is not aligned to the 0x1000 page size" in err(r)
    r = raw()
    first = next(iter(r["pages"]))
    r["pages"][hex(int(first))] = [0] * 512
    assert "listed twice" in err(r)


def test_not_a_dict():
    assert err([1, 2]) == "state: expected a JSON object, got list"


def test_hyp_s1_state_loads_with_va_bits():
    b = S2(kind="arm64-hyp-s1", ia=48, start=0, nroots=1)
    st = load_state(b.raw())
    assert st.kind == "arm64-hyp-s1" and st.va_bits == 48 and st.owner_field is None
    r = b.raw()
    del r["va_bits"]
    assert err(r).startswith("va_bits: missing")


def test_load_step_normalises_and_rejects():
    s = load_step(step("map", addr="0x1000", size=4096, phys="0x8000", prot=6, force_pte=False))
    assert s.args == {"addr": 0x1000, "size": 4096, "phys": 0x8000, "prot": 6, "force_pte": False}
    assert s.describe() == "map(addr=0x1000, size=0x1000, phys=0x8000, prot=0x6, force_pte=False) -> 0"
    with pytest.raises(StateError, match="step.op: unknown operation 'remap'"):
        load_step(step("remap"))
    with pytest.raises(StateError, match=r"step.args.size: missing"):
        load_step({"op": "unmap", "args": {"addr": 0}, "ret": 0})
    with pytest.raises(StateError, match="step.ret: missing"):
        load_step({"op": "init", "args": {}})
    with pytest.raises(StateError, match="step.out.young: expected true or false"):
        load_step(step("is_young", out={"young": 1}, addr=0))


def test_walked_range_wraps_like_the_kernel():
    assert walked_range(0x1234, 0x10, 12) == (0x1000, 0x2000)
    assert walked_range(0x1000, 0, 12) == (0x1000, 0x1000)
    a, e = walked_range(0x5000, (1 << 64) - 0x3000, 12)
    assert a == 0x5000 and e == 0x2000          # wrapped: nothing is walked


def test_check_step_rejects_other_kinds_and_ops():
    hyp = S2(kind="arm64-hyp-s1", ia=48, start=0, nroots=1).raw()
    with pytest.raises(StateError, match="check_step specifies arm64-stage2"):
        spec.check_step(hyp, step("unmap", addr=0, size=0x1000), hyp)
    with pytest.raises(StateError, match="unknown operation"):
        spec.check_step(raw(), step("frobnicate"), raw())
