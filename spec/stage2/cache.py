"""CMO-POC and CMO-POC's instruction-side twin CMO-POU: what the cache maintenance must achieve
before a guest stage-2 mapping becomes visible, judged across steps on a ghost of the caches.

Models: one guest stage 2 run step by step (``CacheJudge``), with the ghost of
ptspec.spec.arch.cache over output addresses. Host writes: an output address that no valid leaf of
the stage 2 maps after a step belongs to the host, which may write it at any time (zero it, reuse
it, merge it, load an image into it); so at the end of every step, every address that stopped
being mapped anywhere in the stage 2 is written by the host. An address stays the guest's while
one valid leaf maps it: the host's writes to it then are its own business (virtio and the like
are coherent with the guest's cacheable view). The step's ``dcache`` / ``icache`` events (from
the page-table hooks, or from mmu.c itself in 5.13) are applied in log order, then every
translation the step made visible is judged, then the addresses the step gave up are written.

"Made visible": a post-op valid leaf over an input range whose pre-op translation was not the
same kind of mapping of the same output: not valid, or another output, or (for CMO-POC) not
cacheable, or (for CMO-POU) not executable normal memory (a device leaf is not judged: no RAM
the host writes through its caches lies behind it). Judged only for a guest stage 2 (a state with
``cmo`` true, or a caller that says so: mmu.c 5.13 does the maintenance itself).

Leaves out: the order of the maintenance relative to the descriptor write (the log records no
writes), the clean after a cacheable leaf is removed (C-CMO requires it per step: it protects the
host from the guest's dirty lines, not the guest from the host's), and CTR_EL0.IDC: under FWB
the kernel's hooks skip the D-cache clean, also for executable pages, so the D-side is taken as
coherent for instruction fetches there (docs/cmo.md).
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.arch.cache import CacheGhost, Counts
from ptspec.spec.arch.walk import START, LEVEL, DESC
from ptspec.spec.stage2.cache_runs import changed_runs
from ptspec.spec.stage2.segments import is_valid
from ptspec.spec.stage2.treediff import diff_chunks
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation


# -- the plain statement: page by page, with sets of pages -------------------------------------------

class PlainCacheJudge:
    """CacheJudge's statement page by page over an input window [lo, hi) (every mapping of the
    stage 2 must lie in it), the caches as Python sets of page addresses. The plain form of
    CacheJudge below, which computes the same with intervals over the step's diff;
    tests/test_cmo_walk.py holds the two equal (violations per step and the ghost itself)."""

    def __init__(self, lo, hi, *, guest=None, dic=False):
        self.lo, self.hi, self.guest, self.dic = lo, hi, guest, dic
        self.dclean, self.iclean = set(), set()

    def _pages(self, state):
        """ipa page -> (valid, level, desc, output page) over the window."""
        from ptspec.spec.stage2.segments import page_translation
        page = 1 << state.page_shift
        out = {}
        for ipa in range(self.lo, self.hi, page):
            valid, level, desc = page_translation(state, ipa)
            if valid:
                size = 1 << ((state.page_shift - 3) * (4 - level) + 3)
                out[ipa] = (level, desc, D.address(desc, state.page_shift) + ipa % size)
        return out

    def check(self, pre, step, post):
        """The ids of the violations of one step (a set)."""
        if not post.roots:              # destroyed: nothing is mapped, all of it is the host's
            self.dclean, self.iclean = set(), set()
            return set()
        page = 1 << post.page_shift
        fwb, xnx = post.has_fwb, post.has_xnx
        for ev in post.tlb_log:
            for pa in range(ev[1], ev[1] + ev[2], page) if ev[0] in ("dcache", "icache") else ():
                if ev[0] == "dcache":
                    self.dclean.add(pa)
                elif fwb or pa in self.dclean:
                    self.iclean.add(pa)
        old, new = self._pages(pre), self._pages(post)
        guest = post.cmo if self.guest is None else self.guest
        found = set()
        for ipa, (level, desc, oa) in new.items():
            prev = old.get(ipa)
            same = prev is not None and prev[2] == oa
            if (guest and not fwb and D.is_cacheable(desc, fwb) and oa not in self.dclean
                    and not (same and D.is_cacheable(prev[1], fwb))):
                found.add("CMO-POC")
            if (guest and not self.dic and D.is_executable(desc, xnx) and D.is_cacheable(desc, fwb)
                    and oa not in self.iclean
                    and not (same and D.is_executable(prev[1], xnx) and D.is_cacheable(prev[1], fwb))):
                found.add("CMO-POU")
        still = {v[2] for v in new.values()}
        for _, _, oa in old.values():
            if oa not in still:
                self.dclean.discard(oa)
                self.iclean.discard(oa)
        return found


# -- the same with intervals over the step's diff (optimised) -----------------------------------------

def _oa(iv, s, page_shift):
    return D.address(iv[DESC], page_shift) + (s - iv[START])


def _leaf_at(post, seg, ipa):
    """The post-op leaf translating ipa (a run's first leaf when the walk cannot say)."""
    q = post.walk().find(ipa) if post.roots else None
    return q if q is not None else seg[3]


@statement("CMO-POC", constrains=(
    "stage2_map_walker_try_leaf", "user_mem_abort", "kvm_set_spte_gfn", "clean_dcache_guest_page",
    "dcache_clean_inval_poc"))
def poc_violations(ghost, step, post, seg, oa, has_fwb):
    """CMO-POC: a cacheable guest mapping becomes visible only over memory cleaned to PoC since the host last wrote it.

    Statement: for a guest stage 2 without FWB, every input range [s, e) that a step makes visible
    through a valid leaf with KVM's normal (cacheable) MemAttr, at output oa, lies over output
    addresses [oa, oa + e - s) whose D-cache was cleaned to PoC (a ["dcache", pa, size] event)
    after the host last wrote them; the host writes every output address that no valid leaf maps
    at the end of a step. With FWB (stage2_has_fwb) nothing is required.

    Why: without FWB the guest's own stage 1 may make the mapping non-cacheable; its accesses then
    bypass the caches and read memory the host's dirty lines have not reached yet: stale data, or
    the previous owner's data.

    Constrains: stage2_map_walker_try_leaf (dcache_clean_inval_poc of a cacheable leaf before
    installing it), user_mem_abort and kvm_set_spte_gfn in 5.13 (clean_dcache_guest_page before
    the map), clean_dcache_guest_page / dcache_clean_inval_poc (the range cleaned).
    """
    if has_fwb:
        return []
    s, e = seg[0], seg[1]
    gap = ghost.d_gap(oa, e - s)
    if gap is None:
        return []
    q = _leaf_at(post, seg, s + gap - oa)
    return [Violation("CMO-POC", f"{step.op}: cacheable leaf at ipa {q[START]:#x} level {q[LEVEL]} "
                                 f"({q[DESC]:#x}) made [{s:#x}, {e:#x}) visible over output "
                                 f"[{oa:#x}, {oa + e - s:#x}), but {gap:#x} was not cleaned to PoC "
                                 f"since the host last wrote it",
                      {"ipa": s, "leaf_ipa": q[START], "level": q[LEVEL], "desc": q[DESC], "pa": gap})]


@statement("CMO-POU", constrains=(
    "stage2_map_walker_try_leaf", "stage2_attr_walker", "user_mem_abort", "kvm_set_spte_gfn",
    "invalidate_icache_guest_page", "icache_inval_pou"))
def pou_violations(ghost, step, post, seg, oa, dic):
    """CMO-POU: an executable guest mapping becomes visible only over memory whose I-cache was invalidated since the host last wrote it.

    Statement: for a guest stage 2 on a CPU without DIC, every input range [s, e) that a step makes
    visible through a valid executable leaf (XN clear) with KVM's normal memory attributes (a
    device leaf maps no RAM the host writes through its caches), at output oa, lies over output addresses
    whose I-cache was invalidated to PoU (an ["icache", pa, size] event) after the host last wrote
    them and, without FWB, after their D-cache was cleaned (a "dcache" event earlier in the log
    since that write): an invalidation before the clean lets the I-cache refill from memory the
    dirty lines have not reached. With DIC (CTR_EL0.DIC) nothing is required.

    Why: the guest would execute stale instructions: the previous contents of a page the host
    reused, or code from before the host loaded a new image.

    Constrains: stage2_map_walker_try_leaf (icache_inval_pou of an executable leaf, after the
    D-cache clean), stage2_attr_walker (icache_inval_pou when relax_perms grants X),
    user_mem_abort and kvm_set_spte_gfn in 5.13 (invalidate_icache_guest_page when the mapping
    is executable), invalidate_icache_guest_page / icache_inval_pou (the range invalidated).
    """
    if dic:
        return []
    s, e = seg[0], seg[1]
    gap = ghost.i_gap(oa, e - s)
    if gap is None:
        return []
    q = _leaf_at(post, seg, s + gap - oa)
    if ghost.coherent_d:
        why = "its I-cache was not invalidated"
    elif ghost.dclean.first_gap(gap, gap + 1) is None:
        why = "its I-cache was not invalidated after its D-cache was cleaned"
    else:               # an invalidation counts only after a clean: none since the host's write
        why = "its D-cache was not cleaned (so no I-cache invalidation counts)"
    return [Violation("CMO-POU", f"{step.op}: executable leaf at ipa {q[START]:#x} level {q[LEVEL]} "
                                 f"({q[DESC]:#x}) made [{s:#x}, {e:#x}) visible over output "
                                 f"[{oa:#x}, {oa + e - s:#x}), but at {gap:#x} {why} since the host "
                                 f"last wrote it",
                      {"ipa": s, "leaf_ipa": q[START], "level": q[LEVEL], "desc": q[DESC], "pa": gap})]


class _Op:
    __slots__ = ("op",)

    def __init__(self, op):
        self.op = op


class CacheJudge:
    """The ghost of one guest stage 2's caches across its steps; ``check(pre, step, post)`` after
    each step returns the CMO-POC and CMO-POU violations of that step.

    guest: True/False, or None to read it from the state (``cmo``: the page table has the
    cache-maintenance hooks, i.e. is a guest's); dic: the CPU has CTR_EL0.DIC.
    """

    def __init__(self, *, guest=None, dic=False):
        self.guest, self.dic = guest, dic
        self.ghost = CacheGhost()
        self.mapped = Counts()          # how many valid leaves map each output address
        self.started = False

    def _start(self, pre):
        """The first state seen: its mappings are taken as done right (clean) and counted."""
        self.started = True
        if not pre.roots:
            return
        ps = pre.page_shift
        for iv in pre.walk().intervals:
            if is_valid(iv):
                oa = D.address(iv[DESC], ps)
                size = iv[1] - iv[START]
                self.mapped.add(oa, oa + size, 1)
                self.ghost.dclean.add(oa, oa + size)
                self.ghost.iclean.add(oa, oa + size)

    def settle(self, violation, page_shift):
        """Take a reported CMO-POC / CMO-POU violation as dealt with (a caller that counts it as a
        known finding): its leaf's whole output counts as cleaned (and, for CMO-POU, invalidated)
        from now on, so that later steps do not report the same uncleaned memory again."""
        w = violation.where
        oa = D.address(w["desc"], page_shift)
        size = G.granule_size(w["level"], page_shift)
        self.ghost.dclean.add(oa, oa + size)
        if violation.inv == "CMO-POU":
            self.ghost.iclean.add(oa, oa + size)

    def check(self, pre, step, post):
        """The CMO-POC and CMO-POU violations of one step (pre and post States; step: a Step or
        any object with .op, or a step record dict: only its op is read)."""
        if isinstance(step, dict):
            step = _Op(step["op"])
        if not self.started:
            self._start(pre)
        if (pre.page_shift, pre.ia_bits) != (post.page_shift, post.ia_bits):
            return []
        if not post.roots:              # destroyed: nothing is mapped, all of it is the host's
            self.ghost, self.mapped = CacheGhost(), Counts()
            return []
        guest = post.cmo if self.guest is None else self.guest
        fwb = post.has_fwb
        ghost = self.ghost
        ghost.coherent_d = fwb
        ghost.apply(post.tlb_log)
        out, gone = [], []
        for seg, poa, qoa, need_poc, need_pou in changed_runs(diff_chunks(pre, post), pre.page_shift, fwb,
                                                      post.has_xnx):
            s, e = seg[0], seg[1]
            if poa is not None:
                self.mapped.add(poa, poa + e - s, -1)
                gone.append((poa, e - s))
            if qoa is None:
                continue
            self.mapped.add(qoa, qoa + e - s, 1)
            if not guest:
                continue
            if need_poc:
                out += poc_violations(ghost, step, post, seg, qoa, fwb)
            if need_pou:
                out += pou_violations(ghost, step, post, seg, qoa, self.dic)
        for pa, size in gone:
            for lo, hi in self.mapped.zero_parts(pa, pa + size):
                ghost.host_write(lo, hi - lo)
        return out
