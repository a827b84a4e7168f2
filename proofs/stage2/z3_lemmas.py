"""z3 lemmas over the stage-2 code of impl (arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15, pKVM owners).

Every lemma runs the impl's **own** functions on symbolic 64-bit inputs (``proofs/engines/z3/bv.py``:
bit-vector terms standing for Python ints, every symbolic branch explored), and compares what they
compute with a statement written from the architecture: z3 terms here, or the independent encoders
of ``spec/`` run on the same symbolic inputs. Granules, levels and IPA sizes stay concrete and are
looped over; addresses, descriptors, counts and ids are symbolic, so each lemma covers all 2**64
values of them.

Functions are looked up through the module the kernel code calls them from (``stage2_map.X``,
``walker.X``) at call time, so a planted bug (``proofs/stage2/planted.py``, ``proofs/stage2/planted_proofs.py``)
is what the lemma checks.

Each ``lemma_*`` returns a ``z3_bv.Outcome`` (proved / refuted with a hex counterexample / unknown).
Left out here: the hyp stage-1 encodings (``hyp_set_prot_attr``; only its leaving the bits KVM
never writes clear is proved, in lemma_prot_attr) and the table-descent half of the
walker (its per-level index and advance are proved; descent is the exhaustive checker's job).
"""

from __future__ import annotations

import errno
import time

import z3

from ptspec.spec.arch import descriptor as SD
from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import pte as P
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import walker
from ptspec.impl.pgtable.geometry import Granule, all_stage2_geometries

from ptspec.proofs.engines.z3.bv import W, as_bool, as_bv, sym
from ptspec.proofs.engines.z3.explore import Outcome, prove
from ptspec.proofs.stage2 import z3_programs as ZP
from ptspec.proofs.stage2.z3_fakes import WalkPgt, walk_data

U64 = (1 << 64) - 1
PAGE_SHIFTS = (12, 14, 16)


def _z(x) -> z3.BitVecRef:
    """A 64-bit input's W-bit term (inputs are zero-extended, so unsigned maths is exact)."""
    return as_bv(x)


def _c(v: int) -> z3.BitVecRef:
    return z3.BitVecVal(v, W)


def aligned(x, size: int) -> z3.BoolRef:
    return z3.URem(_z(x), _c(size)) == 0


def model_values(cex: dict) -> dict:
    """A counterexample's input values as Python values: hex strings as ints, "True"/"False" as
    bools (the other entries -- violated, path, ... -- left out)."""
    out = {}
    for k, v in cex.items():
        if isinstance(v, str) and v.startswith("0x") and " " not in v:
            out[k] = int(v, 16)
        elif v in ("True", "False"):
            out[k] = v == "True"
    return out


def combine(cases, rlimit: int, timeout_ms: int | None = None, deadline=None) -> Outcome:
    """Prove each (label, body, inputs, assume[, show[, program]]) case; stop at the first
    refutation or unknown. `rlimit` is each query's budget; `deadline` (the check's hang guard)
    is the z3 clock (`timeout_ms`, when given, caps it further). `show(values)` turns a
    counterexample's input values into a concrete replay; `program(values)` (``None`` when there
    is none) into a runnable Python program that calls the impl with them and ends in the
    ``assert`` of the case's property, which fails: it becomes the counterexample's ``program``."""
    t0 = time.monotonic()
    paths = queries = n = top_rlimit = 0
    top_seconds = 0.0
    for label, body, inputs, assume, *extra in cases:
        show = extra[0] if extra else None
        program = extra[1] if len(extra) > 1 else None
        if deadline is not None and time.monotonic() > deadline:
            return Outcome("unknown", paths, queries, f"budget not completed (hang guard) after {n} cases",
                           seconds=time.monotonic() - t0)
        out = prove(body, inputs, assume=assume, rlimit=rlimit, timeout_ms=timeout_ms,
                    deadline=deadline, what=label, show=show)
        paths += out.paths
        queries += out.queries
        top_rlimit = max(top_rlimit, out.max_query_rlimit)
        top_seconds = max(top_seconds, out.max_query_seconds)
        n += 1
        if out.status != "proved":
            out.paths, out.queries = paths, queries
            out.max_query_rlimit, out.max_query_seconds = top_rlimit, top_seconds
            if out.counterexample is not None:
                out.counterexample = {"case": label, **out.counterexample}
                if program is not None:
                    try:
                        out.counterexample["program"] = program(model_values(out.counterexample))
                    except Exception as e:   # a display problem must not hide the refutation
                        out.counterexample["program_error"] = repr(e)
            out.seconds = time.monotonic() - t0
            return out
    return Outcome("proved", paths, queries, f"{n} cases, {paths} paths",
                   seconds=time.monotonic() - t0, max_query_rlimit=top_rlimit,
                   max_query_seconds=top_seconds)


# ------------------------------------------------------------------- kvm_block_mapping_supported

def lemma_block_mapping(rlimit, timeout_ms, deadline=None) -> Outcome:
    """kvm_block_mapping_supported(addr, end, phys, level) holds exactly when a leaf at this level
    may map [addr, addr + granule): the level allows a leaf, addr is a multiple of the granule,
    addr + granule <= end, and the output [phys, phys + granule) is aligned and inside the PA range
    -- unless phys is KVM_PHYS_INVALID (an owner annotation), which has no output range."""
    def cases():
        for ps in PAGE_SHIFTS:
            gran = Granule(ps)
            pa_bits = SG.IPA_RANGE[ps][1]
            for level in range(4):
                g = SG.granule_size(level, ps)
                inputs: dict = {}
                addr, end, phys = (sym(n, 64, inputs) for n in ("addr", "end", "phys"))

                def body(gran=gran, level=level, g=g, addr=addr, end=end, phys=phys,
                         pa_bits=pa_bits, ps=ps):
                    got = stage2_map.kvm_block_mapping_supported(gran, addr, end, phys, level,
                                                                 gran.pa_bits)
                    want = z3.And(
                        z3.BoolVal(SG.level_allows_leaf(level, ps)),
                        aligned(addr, g),
                        _z(addr) + g <= _z(end),
                        z3.Or(_z(phys) == U64,
                              z3.And(aligned(phys, g), _z(phys) + g <= (1 << pa_bits))))
                    return {"S2-BA: kvm_block_mapping_supported is true exactly when a leaf may "
                            "map [addr, addr+granule) onto an aligned output range":
                            as_bool(got) == want}
                # phys is a real PA, or the invalid marker of an owner annotation
                assume = [z3.Or(_z(phys) < (1 << pa_bits), _z(phys) == U64)]
                yield (f"{1 << (ps - 10)}K level {level}", body, inputs, assume, None,
                       ZP.block_mapping(ps, level))
    return combine(cases(), rlimit, timeout_ms, deadline)


# ------------------------------------------------------------------- walker: index and advance

def _idx_bits(addr, lo: int, nbits: int) -> z3.BitVecRef:
    """Address bits [lo + nbits - 1 : lo], from the architecture's definition of an index."""
    hi = min(lo + nbits - 1, 63)
    a64 = z3.Extract(63, 0, _z(addr))
    return z3.ZeroExt(W - (hi - lo + 1), z3.Extract(hi, lo, a64))


def _min_start_level(ps: int) -> int:
    return min(SG.stage2_start_level(ia, ps) for ia in range(SG.IPA_RANGE[ps][0],
                                                             SG.IPA_RANGE[ps][1] + 1))


def lemma_walk_index(rlimit, timeout_ms, deadline=None) -> Outcome:
    """For every granule and level, the entry __kvm_pgtable_walk visits first for an address is
    the one the architecture names: address bits [shift(L) + bits - 1 : shift(L)], with shift(L)
    the granule shift of the level and bits = page_shift - 3; the callback sees that address and
    level."""
    def cases():
        for ps in PAGE_SHIFTS:
            for level in range(_min_start_level(ps), 4):
                inputs: dict = {}
                addr, end = sym("addr", 64, inputs), sym("end", 64, inputs)
                ia = SG.IPA_RANGE[ps][1]

                def body(ps=ps, level=level, addr=addr, end=end, ia=ia):
                    pgt = WalkPgt(ps, ia)
                    seen = []

                    def cb(a, e, lvl, tbl, ptp, idx, flag):
                        seen.append((a, lvl, idx))
                        return 1                  # stop after the first visit
                    data = walk_data(pgt, addr, end, cb)
                    ret = walker.__dict__["__kvm_pgtable_walk"](data, 0, level)
                    if ret != 1 or len(seen) != 1 or seen[0][1] != level:
                        return {"C-GET-LEAF: the walk visits one entry at the level": False}
                    a, _, idx = seen[0]
                    nbits = ps - 3
                    return {"C-GET-LEAF: the callback gets the walk's address": _z(a) == _z(addr),
                            "C-GET-LEAF: the entry index is the address bits of the level":
                            _z(idx) == _idx_bits(addr, SG.granule_shift(level, ps), nbits)}
                yield (f"{1 << (ps - 10)}K level {level}", body, inputs, [_z(addr) < _z(end)],
                       None, ZP.walk_index(ps, level))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_root_index(rlimit, timeout_ms, deadline=None) -> Outcome:
    """For every granule and IPA size a 5.x kernel accepts: the start level and number of
    concatenated root pages are those of the architecture (ptspec.spec.arch.geometry), and for every address
    below 2**ia_bits the walk picks root page r and entry i with r < root pages and
    r * PTRS_PER_PTE + i equal to the address bits [ia_bits - 1 : shift(start level)] -- the
    concatenated roots act as one table indexed by the top address bits."""
    def cases():
        for geom in all_stage2_geometries():
            ps, ia, sl = geom.gran.page_shift, geom.ia_bits, geom.start_level
            label = f"{1 << (ps - 10)}K ipa {ia}"
            spec_sl = SG.stage2_start_level(ia, ps)
            spec_roots = SG.root_pages(ia, spec_sl, ps)
            inputs: dict = {}
            addr, end = sym("addr", 64, inputs), sym("end", 64, inputs)

            def body(ps=ps, ia=ia, sl=sl, geom=geom, addr=addr, end=end, spec_sl=spec_sl,
                     spec_roots=spec_roots):
                if sl != spec_sl or geom.pgd_pages != spec_roots:
                    return {f"C-INIT: start level {sl} / {geom.pgd_pages} root pages are the "
                            f"architecture's {spec_sl} / {spec_roots}": False}
                pgt = WalkPgt(ps, ia)
                seen = []

                def cb(a, e, lvl, tbl, ptp, idx, flag):
                    seen.append((lvl, idx))
                    return 1
                ret = walker._kvm_pgtable_walk(walk_data(pgt, addr, end, cb))
                if ret != 1 or len(seen) != 1 or seen[0][0] != sl or len(pgt.pgd.reads) != 1:
                    return {"C-GET-LEAF: the walk visits one root entry at the start level": False}
                root, idx = pgt.pgd.reads[0], seen[0][1]
                shift = SG.granule_shift(sl, ps)
                top = z3.LShR(_z(addr), shift)
                return {"C-GET-LEAF: the root page index is below the number of root pages":
                        _z(root) < spec_roots,
                        "C-GET-LEAF: root page * PTRS_PER_PTE + entry = the address bits above "
                        "the start level's granule":
                        _z(root) * SG.entries_per_table(ps) + _z(idx) == top}
            assume = [_z(addr) < _z(end), _z(end) <= (1 << ia)]
            yield label, body, inputs, assume, None, ZP.root_index(ps, ia)
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_walk_advance(rlimit, timeout_ms, deadline=None) -> Outcome:
    """After __kvm_pgtable_visit handles an entry that is not a table, at any level and from any
    address below the granule's IPA limit, the walk's address is the first boundary of that
    level's granule strictly above the address: a multiple of the granule, greater than the
    address, at most a granule above it, and no larger than the IPA limit (no u64 overflow)."""
    def cases():
        for ps in PAGE_SHIFTS:
            limit = 1 << SG.IPA_RANGE[ps][1]
            for level in range(_min_start_level(ps), 4):
                g = SG.granule_size(level, ps)
                inputs: dict = {}
                addr, end, desc = (sym(n, 64, inputs) for n in ("addr", "end", "desc"))

                def body(ps=ps, level=level, g=g, addr=addr, end=end, desc=desc, limit=limit):
                    pgt = WalkPgt(ps, SG.IPA_RANGE[ps][1])
                    data = walk_data(pgt, addr, end, lambda *a: 0)
                    ret = walker.__dict__["__kvm_pgtable_visit"](data, [desc], 0, 0, level)
                    if ret != 0:
                        return {"C-UNMAP: the visit of a leaf returns 0": False}
                    new = _z(data.addr)
                    return {"C-UNMAP: the next address is a multiple of the granule":
                            z3.URem(new, _c(g)) == 0,
                            "C-UNMAP: the next address is above the address": new > _z(addr),
                            "C-UNMAP: no entry boundary is skipped": new - g <= _z(addr),
                            "C-UNMAP: no overflow beyond the IPA limit": new <= limit}
                not_table = z3.Not(z3.And(level < 3, _z(desc) & 3 == 3))
                yield (f"{1 << (ps - 10)}K level {level}", body, inputs,
                       [_z(addr) < limit, _z(addr) < _z(end), not_table], None,
                       ZP.walk_advance(ps, level))
    return combine(cases(), rlimit, timeout_ms, deadline)


# ------------------------------------------------------------------- descriptor encodings

def lemma_descriptor_oa(rlimit, timeout_ms, deadline=None) -> Outcome:
    """For each granule: kvm_phys_to_pte of a page-aligned PA below the PA limit is the
    architecture's address encoding (ptspec.spec.arch.descriptor.encode_address; 64K keeps PA bits 51:48 in
    descriptor bits 15:12) and kvm_pte_to_phys takes it back; kvm_pte_to_phys of any descriptor is
    the address the architecture reads from it; a leaf built by kvm_init_valid_leaf_pte at any level
    is the architecture's leaf (block/page, address, attributes), and kvm_table_pte is a table
    descriptor for its child with no other bit set."""
    def cases():
        for ps in PAGE_SHIFTS:
            pa_bits = SG.IPA_RANGE[ps][1]
            for level in range(4):
                inputs: dict = {}
                pa, desc, attr = (sym(n, 64, inputs) for n in ("pa", "desc", "attr"))

                def body(ps=ps, level=level, pa=pa, desc=desc, attr=attr):
                    enc = P.kvm_phys_to_pte(pa, ps)
                    leaf = P.kvm_init_valid_leaf_pte(pa, attr, level, ps)
                    ok = {"S2-BA: kvm_phys_to_pte is the architecture's address encoding":
                          _z(enc) == _z(SD.encode_address(pa, ps)),
                          "S2-BA: kvm_pte_to_phys(kvm_phys_to_pte(pa)) == pa":
                          _z(P.kvm_pte_to_phys(enc, ps)) == _z(pa),
                          "S2-BA: kvm_pte_to_phys reads the architecture's address":
                          _z(P.kvm_pte_to_phys(desc, ps)) == _z(SD.address(desc, ps)),
                          "S2-BA: kvm_init_valid_leaf_pte is the architecture's leaf":
                          _z(leaf) == _z(SD.leaf_descriptor(pa, attr, level, ps)),
                          "S2-BA: the leaf is a block (a page at level 3)":
                          as_bool(SD.classify(leaf, level) == (SD.PAGE if level == 3
                                                               else SD.BLOCK))}
                    if level < 3:
                        tbl = stage2_map.kvm_table_pte(pa, ps)
                        ok["S2-TREE: kvm_table_pte is a table descriptor"] = as_bool(
                            SD.is_table(tbl, level))
                        ok["S2-TREE: kvm_table_pte points at its child"] = (
                            _z(SD.address(tbl, ps)) == _z(pa))
                        ok["S2-TREE: kvm_table_pte sets nothing but address, type, valid"] = (
                            _z(tbl) == _z(SD.encode_address(pa, ps)) | 3)
                    return ok
                assume = [_z(pa) < (1 << pa_bits), aligned(pa, 1 << ps)]
                yield (f"{1 << (ps - 10)}K level {level}", body, inputs, assume, None,
                       ZP.descriptor_oa(ps, level))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_prot_attr(rlimit, timeout_ms, deadline=None) -> Outcome:
    """stage2_set_prot_attr refuses exactly executable device memory (-EINVAL) and otherwise gives
    the attributes the architecture encoding asks for (ptspec.spec.arch.descriptor.prot_attrs: MemAttr for
    normal/device with and without FWB, S2AP R/W, XN unless X, SH inner, AF, software bits); and
    kvm_pgtable_stage2_pte_prot of the leaf built from them gives back R, W, X and the software
    bits of the request; neither it nor hyp_set_prot_attr sets a leaf bit KVM never writes (the
    step proofs assume that of their attributes, z3_steps_model.attr_ok)."""
    def cases():
        for fwb in (False, True):
            inputs: dict = {}
            prot, pa = sym("prot", 64, inputs), sym("pa", 64, inputs)

            def body(fwb=fwb, prot=prot, pa=pa):
                ret, attr = stage2_map.stage2_set_prot_attr(prot, fwb)
                want = SD.prot_attrs(prot, fwb)
                if want is None:
                    return {"C-MAP: executable device memory is refused with -EINVAL":
                            ret == -errno.EINVAL}
                if ret != 0:
                    return {f"C-MAP: a permitted prot is accepted (got {ret})": False}
                leaf = P.kvm_init_valid_leaf_pte(pa, attr, 3, 12)
                back = P.kvm_pgtable_stage2_pte_prot(leaf)
                la = SD.leaf_attrs(leaf)
                expect = ((SD.PROT_R if la.r else 0) | (SD.PROT_W if la.w else 0)
                          | (0 if la.xn else SD.PROT_X) | (la.sw << 55))
                return {"C-MAP: the attributes are the architecture's encoding of prot":
                        _z(attr) == _z(want),
                        "S2-BA: the attributes set none of the leaf bits KVM never writes":
                        _z(attr) & SD.s2_leaf_unwritten() == 0,
                        "C-GET-LEAF: kvm_pgtable_stage2_pte_prot reads the leaf's permissions":
                        _z(back) == _z(expect),
                        "C-MAP: R, W, X and software bits survive encode + decode":
                        _z(back) == _z(prot) & (SD.PROT_R | SD.PROT_W | SD.PROT_X | SD.PROT_SW)}
            yield (f"fwb={fwb}", body, inputs, [_z(pa) < (1 << 48), aligned(pa, 1 << 12)], None,
                   ZP.prot_attr(fwb))
        inputs = {}
        prot = sym("prot", 64, inputs)

        def hyp_body(prot=prot):
            ret, attr = P.hyp_set_prot_attr(prot)
            if ret != 0:
                return {"C-HYP-MAP: a refused prot gives no attributes": z3.BoolVal(attr is None)}
            return {"S1-BA: the attributes set none of the leaf bits KVM never writes at EL2":
                    _z(attr) & SD.HYP_LEAF_UNWRITTEN == 0}
        yield ("hyp", hyp_body, inputs, [], None, ZP.hyp_prot_attr())
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_owner(rlimit, timeout_ms, deadline=None) -> Outcome:
    """For both owner-field positions (63:56 seed, 9:2 from 5.15) and every u8 id, the annotation
    kvm_init_invalid_leaf_owner writes is never valid, is the architecture's owner descriptor,
    decodes back to the id (ptspec.spec.arch.descriptor.owner_of and impl owner_id_of), and is counted by
    stage2_pte_is_counted exactly when the id is not 0; and for any descriptor, owner_id_of reads
    the same id as the spec wherever the spec sees an annotation."""
    def cases():
        for field in (P.OWNER_FIELD_SEED, P.OWNER_FIELD_5_15):
            inputs: dict = {}
            oid, desc = sym("owner_id", 8, inputs), sym("desc", 64, inputs)

            def body(field=field, oid=oid, desc=desc):
                d = stage2_map.kvm_init_invalid_leaf_owner(oid, field)
                spec_id = SD.owner_of(d, field)
                ok = {"S2-OWN: an annotation is never valid": _z(d) & SD.VALID == 0,
                      "S2-OWN: the annotation is the architecture's owner descriptor":
                      _z(d) == _z(SD.owner_descriptor(oid, field)),
                      "S2-OWN: owner_id_of reads the id back": _z(P.owner_id_of(d, field)) == _z(oid),
                      "S2-RC: the annotation is counted exactly when the id is not 0":
                      as_bool(stage2_map.stage2_pte_is_counted(d)) == (_z(oid) != 0),
                      "S2-OWN: the spec reads the id back": (
                          z3.BoolVal(False) if spec_id is None else _z(spec_id) == _z(oid))}
                other = SD.owner_of(desc, field)
                if other is not None:
                    ok["S2-OWN: owner_id_of agrees with the spec on any annotation"] = (
                        _z(P.owner_id_of(desc, field)) == _z(other))
                return ok
            yield f"owner field {field[0]}:{field[1]}", body, inputs, [], None, ZP.owner(field)
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_needs_update(rlimit, timeout_ms, deadline=None) -> Outcome:
    """stage2_pte_needs_update(old, new) is false exactly when both descriptors are valid and they
    differ in nothing but the permission bits (S2AP R/W and XN): the -EAGAIN case of a re-map."""
    inputs: dict = {}
    old, new = sym("old", 64, inputs), sym("new", 64, inputs)

    def body():
        got = stage2_map.stage2_pte_needs_update(old, new)
        same = z3.And(_z(old) & SD.VALID != 0, _z(new) & SD.VALID != 0,
                      (_z(old) ^ _z(new)) & (U64 & ~SD.PERMS) == 0)
        return {"C-MAP: stage2_pte_needs_update is false exactly for a valid leaf re-made with "
                "other permissions only": as_bool(got) == z3.Not(same)}
    return combine([("any descriptors", body, inputs, [], None, ZP.needs_update())], rlimit,
                   timeout_ms, deadline)


LEMMAS = {
    "block-mapping": lemma_block_mapping,
    "walk-index": lemma_walk_index,
    "root-index": lemma_root_index,
    "walk-advance": lemma_walk_advance,
    "descriptor-oa": lemma_descriptor_oa,
    "prot-attr": lemma_prot_attr,
    "owner": lemma_owner,
    "needs-update": lemma_needs_update,
}
