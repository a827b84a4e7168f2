"""Runnable counterexamples of the stage-2 z3 lemmas: the impl call on the model's values, then the
failing ``assert``.

A lemma of ``proofs/stage2/z3_lemmas.py`` or ``proofs/stage2/z3_leafsteps.py`` states a property
of an impl function over symbolic inputs. When z3 refutes it, the model gives concrete inputs; the
builders here turn them into a program a reviewer pastes into Python: the imports, the inputs as
hex assignments, the same impl call the lemma made (through the module the kernel code calls it
from, so a planted bug is what runs), and last the property written on plain ints, as an
``assert`` that fails for these inputs. Properties with several named statements are a dict
``checks`` of statement -> bool, and the judge names the false ones.

Each builder takes a case's concrete parameters (granule, level, ...) and returns
``program(values) -> str``: the sixth element of a lemma case (``z3_lemmas.combine``).
"""

from __future__ import annotations

from ptspec.proofs.engines.minimize import judged_program

CHECKS = "assert all(checks.values()), [k for k, ok in checks.items() if not ok]"
SG = "from ptspec.spec.arch import geometry as SG"
SD = "from ptspec.spec.arch import descriptor as SD"
MAP = "from ptspec.impl.pgtable import stage2_map"
WALKER = "from ptspec.impl.pgtable import walker"
FAKES = "from ptspec.proofs.stage2.z3_fakes import PTP, FakePgt, WalkPgt, walk_data"


def _pick(values: dict, names) -> dict:
    return {k: values[k] for k in names}


def block_mapping(ps: int, level: int):
    def program(v):
        return judged_program(
            [MAP, SG, "from ptspec.impl.pgtable.geometry import Granule"],
            _pick(v, ("addr", "end", "phys")),
            [f"gran, level = Granule({ps}), {level}",
             "got = stage2_map.kvm_block_mapping_supported(gran, addr, end, phys, level, "
             "gran.pa_bits)",
             f"g = SG.granule_size(level, {ps})",
             f"want = (SG.level_allows_leaf(level, {ps}) and addr % g == 0 and addr + g <= end "
             f"and (phys == 2**64 - 1 or (phys % g == 0 and phys + g <= 1 << "
             f"SG.IPA_RANGE[{ps}][1])))"],
            "assert bool(got) == want, f'S2-BA: kvm_block_mapping_supported gave {got}, "
            "a leaf here is {want}'")
    return program


def walk_index(ps: int, level: int):
    ia = f"SG.IPA_RANGE[{ps}][1]"

    def program(v):
        return judged_program(
            [WALKER, SG, FAKES], _pick(v, ("addr", "end")),
            [f"level = {level}",
             "seen = []",
             "cb = lambda a, e, lvl, tbl, ptp, idx, flag: seen.append((a, lvl, idx)) or 1",
             f"ret = walker.__dict__['__kvm_pgtable_walk'](walk_data(WalkPgt({ps}, {ia}), addr, "
             "end, cb), 0, level)",
             f"want = (addr >> SG.granule_shift(level, {ps})) & ((1 << {ps - 3}) - 1)"],
            "assert (ret, seen) == (1, [(addr, level, want)]), "
            "f'C-GET-LEAF: one visit at the level, of entry {want:#x}: got ret {ret}, "
            "visits {seen}'")
    return program


def root_index(ps: int, ia: int):
    def program(v):
        return judged_program(
            [WALKER, SG, FAKES, "from ptspec.impl.pgtable.geometry import Stage2Geometry"],
            _pick(v, ("addr", "end")),
            [f"geom = Stage2Geometry.from_ipa({ps}, {ia})",
             f"sl = SG.stage2_start_level({ia}, {ps})",
             f"roots = SG.root_pages({ia}, sl, {ps})",
             "assert (geom.start_level, geom.pgd_pages) == (sl, roots), "
             "'C-INIT: start level and root pages are the architecture\\'s'",
             "seen = []",
             "cb = lambda a, e, lvl, tbl, ptp, idx, flag: seen.append((lvl, idx)) or 1",
             f"pgt = WalkPgt({ps}, {ia})",
             "ret = walker._kvm_pgtable_walk(walk_data(pgt, addr, end, cb))",
             "assert ret == 1 and len(seen) == 1 and seen[0][0] == sl and "
             "len(pgt.pgd.reads) == 1, 'C-GET-LEAF: the walk visits one root entry'",
             "root, idx = pgt.pgd.reads[0], seen[0][1]",
             f"checks = {{'C-GET-LEAF: the root page index is below the number of root pages': "
             f"root < roots, 'C-GET-LEAF: root page * PTRS_PER_PTE + entry = the address bits "
             f"above the start level\\'s granule': root * SG.entries_per_table({ps}) + idx == "
             f"addr >> SG.granule_shift(sl, {ps})}}"],
            CHECKS)
    return program


def walk_advance(ps: int, level: int):
    def program(v):
        return judged_program(
            [WALKER, SG, FAKES], _pick(v, ("addr", "end", "desc")),
            [f"level, limit = {level}, 1 << SG.IPA_RANGE[{ps}][1]",
             f"data = walk_data(WalkPgt({ps}, SG.IPA_RANGE[{ps}][1]), addr, end, lambda *a: 0)",
             "ret = walker.__dict__['__kvm_pgtable_visit'](data, [desc], 0, 0, level)",
             f"new, g = data.addr, SG.granule_size(level, {ps})",
             "checks = {'C-UNMAP: the visit of a leaf returns 0': ret == 0,"
             " 'C-UNMAP: the next address is a multiple of the granule': new % g == 0,"
             " 'C-UNMAP: the next address is above the address': new > addr,"
             " 'C-UNMAP: no entry boundary is skipped': new - g <= addr,"
             " 'C-UNMAP: no overflow beyond the IPA limit': new <= limit}"],
            CHECKS)
    return program


def descriptor_oa(ps: int, level: int):
    def program(v):
        body = [f"ps, level = {ps}, {level}",
                "enc = P.kvm_phys_to_pte(pa, ps)",
                "leaf = P.kvm_init_valid_leaf_pte(pa, attr, level, ps)",
                "checks = {'S2-BA: kvm_phys_to_pte is the architecture\\'s address encoding':"
                " enc == SD.encode_address(pa, ps),"
                " 'S2-BA: kvm_pte_to_phys(kvm_phys_to_pte(pa)) == pa':"
                " P.kvm_pte_to_phys(enc, ps) == pa,"
                " 'S2-BA: kvm_pte_to_phys reads the architecture\\'s address':"
                " P.kvm_pte_to_phys(desc, ps) == SD.address(desc, ps),"
                " 'S2-BA: kvm_init_valid_leaf_pte is the architecture\\'s leaf':"
                " leaf == SD.leaf_descriptor(pa, attr, level, ps),"
                " 'S2-BA: the leaf is a block (a page at level 3)':"
                " SD.classify(leaf, level) == (SD.PAGE if level == 3 else SD.BLOCK)}"]
        if level < 3:
            body += ["tbl = stage2_map.kvm_table_pte(pa, ps)",
                     "checks['S2-TREE: kvm_table_pte is a table descriptor'] = "
                     "bool(SD.is_table(tbl, level))",
                     "checks['S2-TREE: kvm_table_pte points at its child'] = "
                     "SD.address(tbl, ps) == pa",
                     "checks['S2-TREE: kvm_table_pte sets nothing but address, type, valid'] = "
                     "tbl == SD.encode_address(pa, ps) | 3"]
        return judged_program([MAP, SD, "from ptspec.impl.pgtable import pte as P"],
                              _pick(v, ("pa", "desc", "attr")), body, CHECKS)
    return program


def prot_attr(fwb: bool):
    def program(v):
        return judged_program(
            ["import errno", MAP, SD, "from ptspec.impl.pgtable import pte as P"],
            _pick(v, ("prot", "pa")),
            [f"fwb = {fwb}",
             "ret, attr = stage2_map.stage2_set_prot_attr(prot, fwb)",
             "want = SD.prot_attrs(prot, fwb)",
             "if want is None:",
             "    checks = {'C-MAP: executable device memory is refused with -EINVAL':"
             " ret == -errno.EINVAL}",
             "elif ret != 0:",
             "    checks = {f'C-MAP: a permitted prot is accepted (got {ret})': False}",
             "else:",
             "    back = P.kvm_pgtable_stage2_pte_prot(P.kvm_init_valid_leaf_pte(pa, attr, 3, 12))",
             "    la = SD.leaf_attrs(P.kvm_init_valid_leaf_pte(pa, attr, 3, 12))",
             "    expect = ((SD.PROT_R if la.r else 0) | (SD.PROT_W if la.w else 0)"
             " | (0 if la.xn else SD.PROT_X) | (la.sw << 55))",
             "    checks = {'C-MAP: the attributes are the architecture\\'s encoding of prot':"
             " attr == want,"
             " 'C-GET-LEAF: kvm_pgtable_stage2_pte_prot reads the leaf\\'s permissions':"
             " back == expect,"
             " 'C-MAP: R, W, X and software bits survive encode + decode':"
             " back == prot & (SD.PROT_R | SD.PROT_W | SD.PROT_X | SD.PROT_SW),"
             " 'S2-BA: the attributes set none of the leaf bits KVM never writes':"
             " attr & SD.s2_leaf_unwritten() == 0}"],
            CHECKS)
    return program


def hyp_prot_attr():
    def program(v):
        return judged_program(
            [SD, "from ptspec.impl.pgtable import pte as P"], _pick(v, ("prot",)),
            ["ret, attr = P.hyp_set_prot_attr(prot)",
             "checks = {'S1-BA: the attributes set none of the leaf bits KVM never writes at EL2':"
             " ret != 0 or attr & SD.HYP_LEAF_UNWRITTEN == 0}"],
            CHECKS)
    return program


def owner(field: tuple):
    def program(v):
        return judged_program(
            [MAP, SD, "from ptspec.impl.pgtable import pte as P"],
            _pick(v, ("owner_id", "desc")),
            [f"field = {field!r}",
             "d = stage2_map.kvm_init_invalid_leaf_owner(owner_id, field)",
             "checks = {'S2-OWN: an annotation is never valid': d & SD.VALID == 0,"
             " 'S2-OWN: the annotation is the architecture\\'s owner descriptor':"
             " d == SD.owner_descriptor(owner_id, field),"
             " 'S2-OWN: owner_id_of reads the id back': P.owner_id_of(d, field) == owner_id,"
             " 'S2-RC: the annotation is counted exactly when the id is not 0':"
             " bool(stage2_map.stage2_pte_is_counted(d)) == (owner_id != 0),"
             " 'S2-OWN: the spec reads the id back': SD.owner_of(d, field) == owner_id}",
             "if SD.owner_of(desc, field) is not None:",
             "    checks['S2-OWN: owner_id_of agrees with the spec on any annotation'] = "
             "P.owner_id_of(desc, field) == SD.owner_of(desc, field)"],
            CHECKS)
    return program


def needs_update():
    def program(v):
        return judged_program(
            [MAP, SD], _pick(v, ("old", "new")),
            ["got = stage2_map.stage2_pte_needs_update(old, new)",
             "perm_only = (old & SD.VALID != 0 and new & SD.VALID != 0"
             " and (old ^ new) & (2**64 - 1 & ~SD.PERMS) == 0)"],
            "assert bool(got) == (not perm_only), 'C-MAP: stage2_pte_needs_update is false "
            "exactly for a valid leaf re-made with other permissions only'")
    return program


# ------------------------------------------------------------------- leaf steps (z3_leafsteps)

def _own_ok(d: str, field: tuple, max_id: int) -> str:
    """spec S2-OWN of one descriptor on plain ints: valid, zero, or an annotation with id
    1..max_id in the owner field and nothing else set."""
    hi, lo = field
    mask = ((1 << (hi - lo + 1)) - 1) << lo
    return (f"({d} & SD.VALID != 0 or {d} == 0 or ({d} & {(2**64 - 1) & ~mask:#x} == 0 and "
            f"1 <= ({d} & {mask:#x}) >> {lo} <= {max_id}))")


def _common(field: tuple) -> str:
    return ("checks = {f'S2-LEAK: no WARN and no unknown page ({pgt.warnings + pgt.mm_ops.errors})':"
            " not pgt.warnings and not pgt.mm_ops.errors,"
            " 'S2-RC: refcount == 1 + counted entries after the step':"
            " pgt.mm_ops.rc == 1 + n + (tbl[0] != 0),"
            " 'S2-OWN: the entry is valid, 0, or an annotation with id 1..max': "
            + _own_ok("tbl[0]", field, 1) + "}")


def map_leaf(ps, ia, level, field, cont, set_owner):
    def program(v):
        if set_owner:
            names = ("old", "n", "addr", "end", "owner_id")
            data = ("data = stage2_map.Stage2MapData(pgt, 2**64 - 1, memcache, "
                    "owner_id=owner_id, force_pte=True)")
        else:
            names = ("old", "n", "addr", "end", "phys", "attr")
            data = "data = stage2_map.Stage2MapData(pgt, phys, memcache); data.attr = attr"
        return judged_program(
            ["import errno", MAP, SD, FAKES], _pick(v, names),
            ["memcache = object()  # a non-empty memcache: zalloc_page succeeds",
             f"pgt = FakePgt({ps}, {ia}, owner_field={field!r}, max_owner_id=1, "
             f"rc=1 + n + (old != 0), eagain_continues={cont}, cmo={ps == 12})",
             data,
             "tbl = [old]",
             f"ret = stage2_map.stage2_map_walk_leaf(addr, end, {level}, tbl, PTP, 0, data)",
             _common(field),
             "checks[f'C-MAP: the step returns 0 or -EAGAIN (got {ret})'] = "
             "ret in (0, -errno.EAGAIN)"],
            CHECKS, what="the leaf step")
    return program


def unmap_step(ps, ia, level, fwb, tlbi0):
    def program(v):
        return judged_program(
            [SD, FAKES, "from ptspec.impl.pgtable import stage2_walkers",
             "from ptspec.impl.pgtable import walker as W"],
            _pick(v, ("old", "n", "child_rc", "addr")),
            [f"level = {level}",
             f"pgt = FakePgt({ps}, {ia}, rc=1 + n + (old != 0), child_rc=child_rc, fwb={fwb}, "
             f"table_tlbi_level0={tlbi0})",
             "tbl = [old]",
             "table = bool(SD.is_table(old, level))",
             "flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF",
             "ret = stage2_walkers.stage2_unmap_walker(pgt, addr, addr + 1, level, tbl, PTP, 0, "
             "flag)",
             _common((63, 56)),
             "checks[f'C-UNMAP: the step returns 0 (got {ret})'] = ret == 0",
             "if table:",
             "    freed, child = tbl[0] == 0, pgt.mm_ops.child_rc",
             "    checks['S2-LEAK: a table is released exactly when only its own reference is "
             "left'] = freed == (child_rc == 1)",
             "    checks['S2-LEAK: a released table\\'s count reaches 0'] = not freed or child == 0",
             "    checks['S2-TREE: a kept table is untouched'] = freed or (child == child_rc and "
             "tbl[0] == old)",
             "else:",
             "    checks['C-UNMAP: a leaf or annotation is cleared'] = tbl[0] == 0"],
            CHECKS, what="the unmap step")
    return program


def free_step(ps, ia, level):
    def program(v):
        return judged_program(
            [SD, FAKES, "from ptspec.impl.pgtable import stage2_walkers",
             "from ptspec.impl.pgtable import walker as W"],
            _pick(v, ("old", "n", "child_rc")),
            [f"level = {level}",
             f"pgt = FakePgt({ps}, {ia}, rc=1 + n + (old != 0), child_rc=child_rc)",
             "tbl = [old]",
             "table = bool(SD.is_table(old, level))",
             "flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF",
             "ret = stage2_walkers.stage2_free_walker(pgt, 0, 1, level, tbl, PTP, 0, flag)",
             "mm = pgt.mm_ops",
             "checks = {'C-DESTROY: returns 0, no WARN, no unknown page':"
             " ret == 0 and not pgt.warnings and not mm.errors,"
             " 'C-DESTROY: the entry is left as it was': tbl[0] == old,"
             " 'S2-LEAK: one reference dropped per counted entry': mm.rc == n + 1,"
             " 'S2-LEAK: a child table loses exactly its parent\\'s reference':"
             " mm.child_rc == (child_rc - 1 if table else child_rc)}"],
            CHECKS, what="the free step")
    return program
