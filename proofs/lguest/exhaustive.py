"""Exhaustive bounded exploration for lguest: every operation sequence up to a depth, deduplicated.

From a booted guest (``ptspec.proofs.lguest.guest``, two pgdir slots, both formats; ``warm``: both slots
already shadow a pgdir with a user page mapped) a fixed alphabet is
applied breadth-first: faults (read, write, user) on a user page and a kernel page, the guest
writing good, dirty-less and out-of-memory PTEs and a read-only PGD into its tables without
telling, set_pte with good and hostile PTEs (including on the pinned stack page), set_pgd of a user
entry, of the switcher's entry in a pgdir that is not running and one past PTRS_PER_PGD,
new_pagetable for each pgdir (a third one evicting each slot), flush_user, clear_all,
running on each host CPU, guest_pa, set_stack (2 pages, 3 pages) and pin, injected allocation and
get_user_pages failures, and free. States are identified by their raw state (plus pending
injected failures). Every state reached is checked against every invariant, and every transition
against its contract and the per-step LG-SHADOW, so within the bound the check is complete, and
the first violation found comes with a shortest sequence. A state already seen is not expanded,
loaded or judged against the invariants again (it passed them when first seen; its loaded form is
kept with its key): only the step into it is checked.
"""

from __future__ import annotations

import marshal
import time
from collections import deque
from dataclasses import dataclass, field

from ptspec.spec.lguest.check import lguest_check_state, lguest_check_step
from ptspec.spec.lguest.state import load_lguest_state

from ptspec.proofs.engines.collector import quiet_gc
from ptspec.proofs.engines import minimize
from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest.harness import OPS, LguestHarness, _fmt
from ptspec.proofs.lguest.ptdump import render_lguest


def alphabet(fmt: str) -> list[tuple[str, dict]]:
    L = G.GuestLayout(fmt)
    A, B, C = L.pgdirs
    u, k = 0x1000, G.KERNEL_ADDRESS + 0x1000
    stack = L.stack_esp - 0x1000
    sw_idx = 3 if L.pae else 1023
    n_pgd = 4 if L.pae else 1024
    good = G.pte_value(12, G.P | G.RW | G.US | G.A | G.D)
    sw = 0xFFE0_0000 if L.pae else 0xFFC0_0000
    clean = G.pte_value(13, G.P | G.RW | G.US | G.A)
    bad = G.pte_value(L.pfn_limit + 1, G.P | G.RW | G.A | G.D)
    ro_pde = L.user_pte[0] | G.P | G.US | G.A
    # a top-level entry with flags lguest refuses: 4M page + cache bits (2-level), RW in a PDPTE (PAE)
    odd_top = (L.pgdirs[0], L.user_pmd[0] | G.P | G.RW) if L.pae else \
        (L.user_pde_addr(0), L.user_pte[0] | 0xFF)
    return [
        ("fault", dict(vaddr=u, errcode=2)), ("fault", dict(vaddr=u, errcode=4)),
        ("fault", dict(vaddr=k, errcode=2)),
        ("guest_write", dict(addr=L.pte_addr(0, u), value=good)),
        ("guest_write", dict(addr=L.pte_addr(0, u), value=clean)),
        ("guest_write", dict(addr=L.pte_addr(0, u), value=bad)),
        ("guest_write", dict(addr=L.user_pde_addr(0), value=ro_pde)),
        ("guest_write", dict(addr=odd_top[0], value=odd_top[1])),
        ("set_pte", dict(gpgdir=A, vaddr=u, gpte=good)), ("set_pte", dict(gpgdir=A, vaddr=k, gpte=clean)),
        ("set_pte", dict(gpgdir=A, vaddr=stack, gpte=bad)),
        ("set_pte", dict(gpgdir=A, vaddr=u, gpte=good | 0x100)),
        ("set_pte", dict(gpgdir=A, vaddr=k, gpte=G.pte_value(12, G.A))), ("set_pte", dict(gpgdir=A, vaddr=sw, gpte=good)),
        ("set_pgd", dict(gpgdir=A, idx=0)), ("set_pgd", dict(gpgdir=B, idx=sw_idx)),
        ("set_pgd", dict(gpgdir=A, idx=n_pgd)),
        ("new_pagetable", dict(pgtable=A, _evict=0)), ("new_pagetable", dict(pgtable=B, _evict=0)),
        ("new_pagetable", dict(pgtable=C, _evict=0)), ("new_pagetable", dict(pgtable=C, _evict=1)),
        ("flush_user", {}), ("clear_all", {}), ("pa", dict(vaddr=k)), ("pa", dict(vaddr=sw)),
        ("set_stack", dict(esp=L.stack_esp, pages=2)), ("set_stack", dict(esp=L.stack_esp, pages=3)),
        ("pin", dict(vaddr=u + 0x1000)), ("run", dict(host_cpu=0)), ("run", dict(host_cpu=1)),
        ("fail_next_gup", {}), ("fail_next_alloc", {}), ("free", {}),
    ] + ([("set_pmd", dict(pmdp=L.user_pmd[0], idx=0))] if L.pae else [])


@dataclass
class Node:
    lg: object
    raw: dict
    state: object
    lines: list = field(default_factory=list)
    calls: list = field(default_factory=list)      # the same path as harness calls (replayable)


def _calls(op: str, args: dict, line: str) -> list:
    """One transition as the harness calls that replay it (``LguestHarness.program``)."""
    if op in ("fail_next_gup", "fail_next_alloc"):
        return [(f"h.{op}()", line)]
    args = dict(args)
    evict = args.pop("_evict", None)
    step = [(minimize.call("h.step", args, op), line)]
    if evict is None:
        return step
    return [(f"h.force_random({evict})", "")] + step + [("h.clear_forced()", "")]


@dataclass
class ExploreOutcome:
    status: str                    # "passed", "refuted", "unknown" (budget ran out)
    depth: int
    states: int
    transitions: int
    cpu_seconds: float    # CPU time of the run (time.process_time)
    program: str = ""
    violations: list = field(default_factory=list)
    raw_state: dict | None = None
    tables: str = ""
    kernel_function: str = ""


def _key(lg, raw):
    """The identity of a state: its raw state and the injected failures still pending. marshal
    format 0 (no back-references, no interning marks) gives equal bytes for equal values; the raw
    state lists its dict keys in an order fixed by their values (raw_state sorts tables, refs and
    guest memory), so equal raw states give equal keys, and unequal ones unequal keys."""
    return marshal.dumps([raw, lg.host.fail_next_alloc, lg.host.fail_next_gup], 0)


def _apply(node: Node, op: str, args: dict):
    lg = node.lg.clone()
    args = dict(args)
    line = None
    if op == "fail_next_gup":
        lg.host.fail_next_gup += 1
        return lg, None, ["lg.host.fail_next_gup += 1"], None
    if op == "fail_next_alloc":
        lg.host.fail_next_alloc += 1
        return lg, None, ["lg.host.fail_next_alloc += 1"], None
    pre_lines = []
    if "_evict" in args:
        lg.forced_random = [args.pop("_evict")]
        pre_lines.append(f"lg.forced_random = [{lg.forced_random[0]}]")
    method, names = OPS[op]
    pending = {"fail_alloc": lg.host.fail_next_alloc, "fail_gup": lg.host.fail_next_gup}
    ret = getattr(lg, method)(*(args[n] for n in names))
    lg.forced_random = []
    line = f"lg.{method}({', '.join(_fmt(args[n]) for n in names)})" + \
        (f"  # -> {_fmt(ret)}" if ret is not None else "")
    return lg, {"op": op, "args": args, "ret": ret, "out": pending}, pre_lines + [line], ret


@quiet_gc()      # the older objects set aside from its collections (ptspec.proofs.engines.collector)
def explore(depth: int, fmt: str = "2level", *, variant: str = "corrected", npgdirs: int = 2,
            seed_findings=None, exclude=(), warm=True, expired=lambda: False,
            progress=lambda *a, **k: None) -> ExploreOutcome:
    """Explore every sequence of up to ``depth`` operations (ops named in ``exclude`` left out)."""
    t0 = time.process_time()
    h = LguestHarness(fmt, variant=variant, npgdirs=npgdirs, rng_seed=1, seed_findings=seed_findings)
    L = G.GuestLayout(fmt)
    G.boot(h, L)
    h.booted, h.boot_source = len(h.log), f"boot(h, GuestLayout({fmt!r}))"
    if warm:       # both slots get a user table: B faulted in the other slot, then A again
        h.force_random(1)
        h.step("new_pagetable", pgtable=L.pgdirs[1])
        h.step("fault", vaddr=0x1000, errcode=2)
        h.step("new_pagetable", pgtable=L.pgdirs[0])
        h.step("fault", vaddr=0x2000, errcode=0)
        h.clear_forced()
    if h.violations:
        cx = h.counterexample()
        return ExploreOutcome("refuted", 0, 1, h.steps, time.process_time() - t0, cx["ops"],
                              cx["violations"], h.raw, cx["tables"], cx["kernel_function"])
    root = Node(h.lg, h.raw, load_lguest_state(h.raw), list(h.lines), list(h.calls))
    # key -> the state's LgState. A state already seen has passed every invariant (the root in the
    # harness, the others below; the check reads only the state), so a transition back into it
    # needs only its step checked, against the state loaded the first time.
    seen = {_key(h.lg, h.raw): root.state}
    frontier = deque([(root, 0)])
    transitions = 0
    ops = [(op, a) for op, a in alphabet(fmt) if op not in exclude]
    while frontier:
        node, d = frontier.popleft()
        if d >= depth:
            continue
        if node.lg.freed:
            continue
        for op, args in ops:
            if node.lg.dead is not None and op != "free":
                continue
            if expired():
                return ExploreOutcome("unknown", depth, len(seen), transitions, time.process_time() - t0)
            lg, step, lines, _ = _apply(node, op, args)
            transitions += 1
            progress()
            raw = lg.raw_state() if step else node.raw
            key = _key(lg, raw)
            known = seen.get(key)
            st = node.state if not step else known if known is not None else load_lguest_state(raw)
            if step:
                found = (lguest_check_state(st) if known is None else []) + \
                    lguest_check_step(node.state, step, st)
                if found:
                    program = h.program(node.calls + _calls(op, args, lines[-1]))
                    return ExploreOutcome("refuted", depth, len(seen), transitions,
                                          time.process_time() - t0, program, [str(v) for v in found],
                                          raw, render_lguest(raw), op)
            if known is not None:
                continue
            seen[key] = st
            frontier.append((Node(lg, raw, st, node.lines + lines,
                                  node.calls + _calls(op, args, lines[-1])), d + 1))
    return ExploreOutcome("passed", depth, len(seen), transitions, time.process_time() - t0)
