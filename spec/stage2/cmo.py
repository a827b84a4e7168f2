"""C-CMO: the cache maintenance a guest stage-2 table owes when it installs, removes or makes a leaf
executable.

Models: the CMOs 5.14/5.15 perform inside arch/arm64/kvm/hyp/pgtable.c through the page table's
mm_ops (dcache_clean_inval_poc, icache_inval_pou), present for a guest stage 2 (state ``cmo``
true) and absent for the pKVM host stage 2: before installing a leaf, clean+invalidate its output
range to PoC if cacheable and invalidate the I-cache if executable; after removing a cacheable
leaf without FWB, clean it to PoC; before granting execute permission, invalidate the I-cache.

Leaves out: the order of a CMO relative to the descriptor write (the log records no writes), and
kvm_pgtable_stage2_flush, whose events C-FLUSH judges exactly.
"""

from operator import itemgetter

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.bbm import SW_BITS_STORE_SINCE
from ptspec.spec.stage2.contract_common import Report, op_range
from ptspec.spec.stage2.ranges import covers, union_sized
from ptspec.spec.stage2.segments import FlatL3, L3Chunk, clip_runs, is_valid, page_runs
from ptspec.spec.stage2.treediff import diff_chunks, diff_within
from ptspec.spec.stage2.state import kernel_before, kernel_since
from ptspec.spec.stage2.step import walk_error
from ptspec.spec.arch.walk import START, END, LEVEL, DESC
from ptspec.spec.statements import statement

_FIRST, _SECOND = itemgetter(1), itemgetter(2)


def _ranges(state, kind):
    """The merged output ranges of the state's `kind` events (dcache or icache)."""
    evs = state.events(kind)
    return union_sized(list(map(_FIRST, evs)), list(map(_SECOND, evs)))


def _add_runs(entries, page, runs, B, page_shift, fwb, xnx):
    """Append to `entries` (see check_cmo) one entry per run of level-3 slots (segments.page_runs
    of descriptor list B: one output range, the same attributes), page(i) the leaf of slot i."""
    for run in runs:
        d = B[run[0]]
        entries.append((page(run[0]), D.address(d, page_shift), len(run) << page_shift,
                         D.is_cacheable(d, fwb), D.is_executable(d, xnx), (page, run)))


def _suspects(new, flag, ranges, starts):
    """Indices of the entries of `new` (leaves, or runs of pages with one output range and the same
    attributes; see check_cmo) with new[k][flag] set that may lack a covering event: a run of such
    entries, consecutive in `new` with outputs that continue each other, whose
    whole output is covered needs no leaf-by-leaf look (merged ranges are disjoint and not
    adjacent: a contiguous range is covered exactly when each of its parts is)."""
    out = set()
    k = 0
    while k < len(new):
        if not new[k][flag]:
            k += 1
            continue
        j, end = k + 1, new[k][1] + new[k][2]
        while j < len(new) and new[j][flag] and new[j][1] == end:
            end += new[j][2]
            j += 1
        if not covers(ranges, new[k][1], end, starts):
            out.update(range(k, j))
        k = j
    return out


# from 5.15 stage2_unmap_walker and stage2_flush_walker clean through mm_ops->dcache_clean_inval_poc
DCACHE_VIA_MM_OPS_SINCE = (5, 15, 0)


@statement("C-CMO", constrains=(
    "stage2_map_walker_try_leaf", "stage2_unmap_walker", "stage2_flush_dcache",
    "stage2_attr_walker", "icache_inval_pou"))
def check_cmo(pre, step, post):
    """C-CMO: leaves installed, removed or made executable get the cache maintenance they need.

    Statement: when the table does cache maintenance (state cmo true):
    map: every leaf the step newly installed in R (a valid post-op leaf that differs from the page's
    pre-op translation) is covered by ["dcache", pa, size] events if its MemAttr is cacheable
    (normal), and by ["icache", pa, size] events if it is executable (XN clear; with FEAT_XNX any XN
    but 0b10: D.is_executable), [pa, pa + size)
    covering the leaf's whole output range;
    unmap: without FWB, every removed valid cacheable leaf intersecting R is covered by dcache events;
    relax_perms: a leaf that becomes executable is covered by icache events.
    By kernel version: from 6.10 (SW_BITS_STORE_SINCE) a map that changes only a leaf's software
    bits (58:55) stores them in place, and that leaf is not new (seen in 6.10.0 and 6.12.19, not
    6.9.0).
    When the table does no cache maintenance (cmo false), no step logs dcache or icache events,
    except that before 5.15 (DCACHE_VIA_MM_OPS_SINCE; seen in 5.14.2) unmap and flush call
    dcache_clean_inval_poc themselves, not through mm_ops: an unmap without cmo is judged as one
    with it (its dcache events owed, no icache event allowed).

    Why: without FWB the guest may read memory through a non-cacheable alias, so stale or dirty cache
    lines must reach PoC before the guest sees the page (and after it loses it, before the host
    reuses it); an I-cache not invalidated lets the guest execute stale instructions.

    Constrains: stage2_map_walker_try_leaf (CMOs before installing the new PTE), stage2_unmap_walker
    (stage2_flush_dcache of a removed cacheable leaf), stage2_attr_walker (icache_inval_pou when X is
    granted), and the mm_ops of kvm_s2_mm_ops versus the host's.
    """
    rep = Report("C-CMO", step)
    if step.op in ("flush", "init", "destroy") or pre.kind != post.kind or pre.ia_bits != post.ia_bits:
        return []
    direct = step.op == "unmap" and kernel_before(pre, DCACHE_VIA_MM_OPS_SINCE)
    if not pre.cmo:
        for ev in post.tlb_log:
            if ev[0] == "icache" or ev[0] == "dcache" and not direct:
                rep.add(f"the table does no cache maintenance (cmo false), yet the step logged "
                        f"[\"{ev[0]}\", {ev[1]:#x}, {ev[2]:#x}]")
        if not direct:
            return rep.result()
    if step.op not in ("map", "unmap", "relax_perms"):
        return []
    A, E = op_range(pre, step)
    if walk_error(pre, A, E) is not None or E <= A:
        return []
    ps = pre.page_shift
    merged = {}         # kind -> (its events' ranges, merged; their starts), built when first asked

    def ranges(kind):
        if kind not in merged:
            got = _ranges(post, kind)
            merged[kind] = (got, [r[0] for r in got])
        return merged[kind]

    def need(kind, iv, why):
        oa = D.address(iv[DESC], ps)
        size = iv[END] - iv[START]
        got, starts = ranges(kind)
        if not covers(got, oa, oa + size, starts):
            rep.add(f"{why} {iv[DESC]:#x} at ipa {iv[START]:#x} level {iv[LEVEL]} has no "
                    f"[\"{kind}\", ...] covering its output [{oa:#x}, {oa + size:#x})",
                    {"ipa": iv[START], "level": iv[LEVEL], "desc": iv[DESC]})

    if step.op == "map":
        seen = set()
        sw_only = kernel_since(pre, SW_BITS_STORE_SINCE)
        # the pages of R whose translation changed (diff_within: what sweep(pre, post, A, E)
        # finds not same_translation, at the cost of the change, not of R's size)
        new = []        # (leaf, output, size, cacheable, executable, run) of each new leaf, in order
        fwb, xnx = pre.has_fwb, pre.has_xnx
        for seg in diff_within(pre, post, A, E, compact=True):
            if type(seg) is L3Chunk:
                # differing level-3 slots of R: each valid post page is a new leaf, unless (6.12
                # on) only its software bits changed from the valid page before it
                old, now, within = seg.A, seg.B, seg.slots_within(A, E)
                pages = [i for i in within if now[i] & D.TYPE_BITS == D.TABLE_OR_PAGE and not (
                    sw_only and old[i] & D.TYPE_BITS == D.TABLE_OR_PAGE and not (old[i] ^ now[i]) & ~D.SW_MASK)]
                _add_runs(new, seg.page, page_runs(pages, now, seg.g, ps), now, ps, fwb, xnx)
                continue
            if type(seg) is FlatL3 and seg.one_is_pre and (seg.new_pages() is not None or (
                    is_valid(seg.one) and seg.one[LEVEL] < G.LAST_LEVEL)):
                # a new table where nothing was mapped, or where a block was (a valid leaf of
                # another level: never the same leaf): its valid pages of R
                within = seg.slots_within(A, E)
                _add_runs(new, seg.page, clip_runs(seg.valid_runs(), within), seg.B, ps, fwb, xnx)
                continue
            if (type(seg) is FlatL3 and not seg.one_is_pre and is_valid(seg.one)
                    and seg.one[LEVEL] < G.LAST_LEVEL):
                # a block where a table was: every segment has it as its post-op leaf, one entry
                q = seg.one
                if q[START] not in seen:
                    seen.add(q[START])
                    new.append((q, D.address(q[DESC], ps), q[END] - q[START],
                                D.is_cacheable(q[DESC], fwb), D.is_executable(q[DESC], xnx), None))
                continue
            for s, e, p, q in (seg.expand() if type(seg) is FlatL3 else (seg,)):
                if s >= E or e <= A or not is_valid(q) or q[START] in seen:
                    continue
                if (sw_only and is_valid(p) and p[LEVEL] == q[LEVEL]
                        and not (p[DESC] ^ q[DESC]) & ~D.SW_MASK):
                    continue        # 6.10 on: only the software bits changed, the same leaf stays
                seen.add(q[START])
                new.append((q, D.address(q[DESC], ps), q[END] - q[START],
                            D.is_cacheable(q[DESC], fwb), D.is_executable(q[DESC], xnx), None))
        d_suspects = _suspects(new, 3, *ranges("dcache")) if new else ()
        i_suspects = _suspects(new, 4, *ranges("icache")) if new else ()
        for k, (q, _, _, cacheable, executable, run) in enumerate(new):
            d_need, i_need = cacheable and k in d_suspects, executable and k in i_suspects
            if not (d_need or i_need):
                continue
            for leaf in (q,) if run is None else map(*run):
                if d_need:
                    need("dcache", leaf, "new cacheable leaf")
                if i_need:
                    need("icache", leaf, "new executable leaf")
    elif step.op == "unmap":
        if not pre.has_fwb:
            # each valid cacheable pre-op leaf intersecting R whose first page is invalid after the
            # step: the diff's segments that start such a leaf (what post.walk().find(leaf start)
            # says of each leaf of covering(pre, A, E), at the cost of what changed); level-3
            # pages a run at a time, a run whose whole output is covered judged at once
            gone = []       # (leaf, output, size, cacheable, executable, run), as `new` above
            for item in diff_chunks(pre, post):
                if type(item) is L3Chunk:
                    old, now = item.A, item.B
                    pages = [i for i in item.slots_within(A, E)
                             if old[i] & D.TYPE_BITS == D.TABLE_OR_PAGE and D.is_cacheable(old[i], False)
                             and now[i] & D.TYPE_BITS != D.TABLE_OR_PAGE]
                    _add_runs(gone, item.old_page, page_runs(pages, old, item.g, ps), old, ps, False, False)
                    continue
                if type(item) is FlatL3 and item.old_pages() is not None:
                    # a removed table's valid pages, nothing valid after them
                    runs = clip_runs(item.valid_runs(), item.slots_within(A, E))
                    runs = [r for r in runs if D.is_cacheable(item.B[r[0]], False)]
                    _add_runs(gone, item.page, runs, item.B, ps, False, False)
                    continue
                for s, e, p, q in (item.expand() if type(item) is not tuple else (item,)):
                    if (s == p[START] and p[START] < E and p[END] > A and is_valid(p)
                            and D.is_cacheable(p[DESC], False) and not is_valid(q)):
                        gone.append((p, D.address(p[DESC], ps), p[END] - p[START], True, False, None))
            suspects = _suspects(gone, 3, *ranges("dcache")) if gone else ()
            for k, (p, _, _, _, _, run) in enumerate(gone):
                if k in suspects:
                    for leaf in (p,) if run is None else map(*run):
                        need("dcache", leaf, "removed cacheable leaf")
    else:
        p = pre.walk().find(A)
        q = post.walk().find(A) if post.roots else None
        if (p is not None and q is not None and is_valid(p) and is_valid(q)
                and not D.is_executable(p[DESC], pre.has_xnx)
                and D.is_executable(q[DESC], pre.has_xnx)):
            need("icache", q, "leaf made executable")
    return rep.result()
