"""The reworked walker's ``pgtable.c`` (Linux 6.2 and later) as a subject of the stage-2 lock-step.

``MainlineHarness`` is ``subject.CSideHarness`` over ``cside_mainline.CPgtableMainline``: the same
operation records, checks and findings, plus what changed in the API. Where a tree has no
``kvm_pgtable_stage2_mkold``/``_is_young`` (6.5 on), the generator's mkold and is_young records
become the call that replaced them, ``test_clear_young(addr, PAGE_SIZE, mkold)``, judged by its own
contract (C-TEST-CLEAR-YOUNG). ``split`` (6.5 on) is an operation of its own (C-SPLIT); its rule is
added to the seeded program by ``program_rules`` (which both lock-step drivers, random and
hypothesis, run). Maps of the 4k-40 geometry are the fault
handler's (shared walk, stops on -EAGAIN: ``FAULT_PATH``), the others the non-fault callers'. Every step is also judged by the reworked
walker's statements (spec/stage2/mainline.py: S2-LOCKED, S2-RCU), with the tree's version. On 7.x
set_owner records of owner 0 or ids above the top are skipped (no annotate call writes them);
instead ``annotate`` (``kvm_pgtable_stage2_annotate`` with any type and annotation,
C-ANNOTATE) is an operation of its own, drawn by ``program_rules`` where the tree has it:
POISONED and other stored types, DONATION owner records, and the refused inputs
(``strategies.choose_annotation``).
On a tree whose enum kvm_pgtable_prot has KVM_PGTABLE_PROT_NORMAL_NC (6.9 on) the seeded program's
maps draw NORMAL_NC prots too (``program_normal_nc``); on one that splits X into PX and UX (6.19 on),
maps and relax_perms draw prots with one of them (``program_px_ux``).
"""

from __future__ import annotations


from ptspec.spec.stage2 import mainline as ML
from ptspec.proofs.kernel.cside_mainline import CPgtableMainline
from ptspec.proofs.kernel.tree_mainline import SPEC_FLAG_AS_S1
from ptspec.proofs.kernel.subject import CSideHarness
from ptspec.proofs.stage2.harness import ERRNO_NAMES, fmt
from ptspec.proofs.stage2.strategies import choose_address, choose_annotation, choose_size


class MainlineHarness(CSideHarness):
    """One C stage-2 table of a 6.2+ tree checked against the spec after every step."""

    pgtable_class = CPgtableMainline
    # Geometries whose maps come from the fault handler (user_mem_abort): a shared walk that
    # stops on -EAGAIN (KVM_PGTABLE_WALK_SHARED | KVM_PGTABLE_WALK_HANDLE_FAULT); the others map
    # as the non-fault callers do (walk flags 0)
    FAULT_PATH = {(12, 40)}
    FAULT_FLAGS = (1 << 3) | (1 << 4)
    # Geometries whose table is initialised with KVM_PGTABLE_S2_AS_S1 (7.1 on, where the tree's
    # enum kvm_pgtable_stage2_flags has it): every leaf's MemAttr is stage 1's (16k-47: no FWB, CMO
    # hooks on, no other option, so the rest of the lock-step keeps its normal/device/NC coverage)
    AS_S1_GEOMETRIES = {(14, 47)}

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, **kw):
        if ((page_shift, ia_bits) in self.AS_S1_GEOMETRIES
                and "KVM_PGTABLE_S2_AS_S1" in dict(self.tree.shape.mainline.s2_flags)):
            kw["flags"] = kw.get("flags", 0) | SPEC_FLAG_AS_S1
        super().__init__(page_shift, ia_bits, **kw)

    @classmethod
    def program_rules(cls, opt):
        """The seeded program's rules for this tree (proofs/stage2/program.py): split and
        test_clear_young over a chosen range, where the tree has them; the same draws as
        ``machine_rules`` gives the hypothesis machine."""
        ml = cls.tree.shape.mainline
        rules = []
        if ml.split:
            def split(ch):
                return "op", "split", dict(addr=choose_address(ch, opt), size=choose_size(ch, opt))
            rules.append(split)
        if ml.annotate and ml.donation_type is not None:
            def annotate(ch):
                return "op", "annotate", dict(addr=choose_address(ch, opt),
                                              size=choose_size(ch, opt),
                                              **choose_annotation(ch))
            rules.append(annotate)
        if ml.test_clear_young:
            def test_clear_young(ch):
                return "op", "test_clear_young", dict(addr=choose_address(ch, opt),
                                                      size=choose_size(ch, opt),
                                                      mkold=ch.choice((0, 1)))
            rules.append(test_clear_young)
        return rules

    @classmethod
    def program_normal_nc(cls) -> bool:
        """The tree's enum kvm_pgtable_prot has KVM_PGTABLE_PROT_NORMAL_NC (6.9 on): the seeded
        program's maps draw non-cacheable prots too (``strategies.PROT_BASE_NC``)."""
        return cls.tree.shape.mainline.normal_nc is not None

    @classmethod
    def program_px_ux(cls) -> bool:
        """The tree's enum kvm_pgtable_prot splits X into KVM_PGTABLE_PROT_PX and _UX (7.1 on):
        maps and relax_perms draw prots with one of them too (``strategies.prot_options``)."""
        ml = cls.tree.shape.mainline
        return ml.px is not None and ml.ux is not None

    def step(self, op: str, **args):
        ml = self.tree.shape.mainline
        if op in ("mkold", "is_young") and not ml.mkold and "addr" in args:
            args = {"addr": args["addr"], "size": 1 << self.params["page_shift"],
                    "mkold": int(op == "mkold")}
            op = "test_clear_young"
        oid = args.get("owner_id")
        if (op == "set_owner" and ml.annotate and type(oid) is int
                and not 1 <= oid <= self.pgt.max_owner_id):
            return None, []             # 7.x: owner 0 and ids above the top are no annotate call
        if (op == "split" and not ml.split or op == "test_clear_young" and not ml.test_clear_young
                or op == "annotate" and not ml.annotate):
            return None, []             # not an operation of this tree
        if op == "test_clear_young" and type(args["addr"]) is int and type(args["size"]) is int:
            # (a value that is no u64 goes on to the binding, which refuses it: C-ARGS)
            # the kernel's callers age within the IPA space (kvm_age_gfn); out of it the walk WARNs
            # and only on a live table (the walk of a destroyed one WARNs too)
            top = 1 << self.params["ia_bits"]
            if args["addr"] >= top or self.destroyed:
                return None, []
            args = dict(args, size=min(args["size"], top - args["addr"]))
        ret, found = super().step(op, **args)
        if op in ("split", "annotate") and ret is not None:
            # the caller tops up split_page_cache before each split (kvm_mmu_split_huge_pages), and
            # pKVM its memcache before annotating (as before set_owner): refilled between steps,
            # so the next operation's pre-state has it full
            self.mc.topup(self.mc.capacity)
            self.lines.append(f"mc.topup({self.mc.capacity})")
            self._last_raw = self.pgt.snapshot()
            self.state = self._load(self._last_raw) if self.check else None
        return ret, found

    def _call(self, op: str, args: dict):
        if op == "test_clear_young":
            young = self.pgt.test_clear_young(args["addr"], args["size"], args["mkold"])
            return int(young), {"young": young}
        if op == "split":
            return self.pgt.split(args["addr"], args["size"], self.mc), {}
        if op == "annotate":
            mc = None if args.get("no_memcache") else self.mc
            return self.pgt.annotate(args["addr"], args["size"], mc, args["type"],
                                     args["annotation"]), {}
        if op == "map" and self._fault_path():
            mc = None if args.get("no_memcache") else self.mc
            return self.pgt.map(args["addr"], args["size"], args["phys"], args["prot"], mc,
                                flags=self.FAULT_FLAGS), {}
        return super()._call(op, args)

    def _fault_path(self) -> bool:
        return (self.params["page_shift"], self.params["ia_bits"]) in self.FAULT_PATH

    def _record(self, op: str, args: dict, ret, no_mc: bool = False):
        if op == "split":
            shown = ERRNO_NAMES.get(ret, fmt(ret))
            self.lines.append(f"pgt.split({args['addr']:#x}, {args['size']:#x}, mc)  # -> {shown}")
            return
        if op == "annotate":
            shown = ERRNO_NAMES.get(ret, fmt(ret))
            self.lines.append(f"pgt.annotate({args['addr']:#x}, {args['size']:#x}, "
                              f"{'None' if no_mc else 'mc'}, {args['type']}, "
                              f"{args['annotation']:#x})  # -> {shown}")
            return
        super()._record(op, args, ret, no_mc)

    def _step(self, op: str, args: dict):
        pre_raw = self._last_raw
        ret, found = super()._step(op, args)
        if self.check and ret is not None:
            extra = ML.check_mainline_step(pre_raw, {"op": op, "args": args, "ret": ret},
                                           self._last_raw)
            self.violations.extend(extra)
            found = list(found) + extra
        return ret, found
