"""lguest obligations (ids lg.*): lock-step runs, exhaustive exploration, the seed's findings, misuse.

Importing this module registers them (see ``ptspec.proofs.runner.registry``). Every check judges impl.lguest only
through the spec (ptspec.spec.lguest.check) and turns a violation into a counterexample a reviewer can
use: the operation sequence as Python, the shadow tables in ptdump style, the violations, and the
kernel function of the failing step. Budgets come from the profile (``ctx.budget``), scaled here so
that all lg.* obligations together take about 10 s in the default profile and 3 s in quick.
"""

from __future__ import annotations

from ptspec.impl.lguest import SEED_FINDINGS, Lguest

from ptspec.proofs.lguest import exhaustive as lguest_exhaustive
from ptspec.proofs.lguest import findings as lguest_findings
from ptspec.proofs.lguest import lockstep as lguest_lockstep
from ptspec.proofs.runner.registry import Obligation, Result, cpu_rate, obligation, register

LG_INVARIANTS = ["LG-SHADOW", "LG-RC", "LG-SWITCHER", "LG-BND"]
LG_CONTRACTS = ["LG-C-SET-PTE", "LG-C-SET-PGD", "LG-C-SET-PMD", "LG-C-NEW-PGTABLE", "LG-C-FLUSH",
                "LG-C-CLEAR-ALL", "LG-C-DEMAND", "LG-C-RUN", "LG-C-INIT", "LG-C-FREE", "LG-C-OTHER",
                "LG-C-STACK", "LG-C-RETURNS"]
KERNEL_FUNCTIONS = ["demand_page", "page_writable", "pin_page", "guest_set_pte", "do_set_pte",
                    "guest_set_pgd", "guest_set_pmd", "find_pgdir", "new_pgdir",
                    "guest_new_pagetable", "flush_user_mappings", "guest_pagetable_flush_user",
                    "guest_pagetable_clear_all", "release_all_pagetables",
                    "allocate_switcher_mapping", "map_switcher_in_guest", "guest_pa",
                    "init_guest_pagetable", "page_table_guest_data_init", "free_guest_pagetable"]


def _lockstep(fmt: str, mode: str):
    def run(ctx):
        examples = max(2, ctx.budget["hypothesis_examples"] // 12)
        out = lguest_lockstep.run_lockstep(fmt, mode, examples=examples, steps=ctx.budget["steps"],
                                           seed=ctx.seed,
                                           shrink_replays=ctx.budget["shrink_replays"])
        detail = (f"{out.examples} runs, {out.steps} steps, "
                  f"{cpu_rate(out.steps, out.cpu_seconds)} steps per CPU second")
        if out.status == "refuted":
            return Result.refuted(out.failure.counterexample, detail=detail, examples=out.steps)
        return Result.passed(out.steps, detail)
    who = ("a cooperative guest (every table change announced, LG-SHADOW checked against the "
           "guest's current tables)" if mode == "coop" else
           "a hostile guest (arbitrary words written into its tables, arbitrary hypercall "
           "arguments: switcher addresses, out-of-range indices, bad frames, unaligned pgdirs)")
    run.__doc__ = (f"Random operation sequences on an x86 {fmt} lguest guest driven as {who}, impl "
                   "and spec in lock-step: every invariant after every step, per-step LG-SHADOW "
                   "and the step's contract, injected allocation and get_user_pages failures.")
    return run


for _fmt in ("2level", "pae"):
    for _mode in ("coop", "hostile"):
        register(Obligation(f"lg.lockstep.{_fmt}-{_mode}", "hypothesis", LG_INVARIANTS + LG_CONTRACTS,
                            "", _lockstep(_fmt, _mode), kernel_functions=KERNEL_FUNCTIONS,
                            time_scale=1.0))


def _exhaustive(fmt: str):
    def run(ctx):
        depth = min(4, max(2, ctx.budget["exhaustive_depth"] - 1))   # quick/default 2, deep 4
        out = lguest_exhaustive.explore(depth, fmt, expired=ctx.expired, progress=ctx.progress)
        detail = (f"depth {out.depth}: {out.states} distinct states, {out.transitions} transitions "
                  f"({cpu_rate(out.transitions, out.cpu_seconds)} per CPU second)")
        if out.status == "refuted":
            return Result.refuted({"ops": out.program, "violations": out.violations,
                                   "tables": out.tables, "kernel_function": out.kernel_function},
                                  detail=detail, examples=out.transitions)
        if out.status == "unknown":
            return Result.unknown(f"budget not completed (hang guard) at {detail}", examples=out.transitions)
        return Result.proved(out.transitions, detail)
    run.__doc__ = (f"Every sequence of the exploration alphabet up to depth 2 (deep profile: 4) "
                   f"from a booted x86 {fmt} guest with two pgdir slots: faults, silent guest "
                   "writes of good, clean, out-of-memory and read-only entries, set_pte with good, "
                   "GLOBAL, non-present and bad PTEs (also on the pinned stack and the switcher), "
                   "set_pgd of a user entry, of a non-running pgdir's switcher entry and one past "
                   "PTRS_PER_PGD, new_pagetable with each eviction choice, flush, clear_all, "
                   "guest_pa (also at the switcher), set_stack of 2 and 3 pages, pin, running "
                   "on each host CPU, injected failures, free; states "
                   "deduplicated; every transition checked against every invariant and contract.")
    return run


for _fmt in ("2level", "pae"):
    register(Obligation(f"lg.exhaustive.{_fmt}", "exhaustive", LG_INVARIANTS + LG_CONTRACTS, "",
                        _exhaustive(_fmt), kernel_functions=KERNEL_FUNCTIONS))


@obligation("lg.seed-as-written", engine="unit", invariants=LG_INVARIANTS + ["LG-C-SET-PTE", "LG-C-DEMAND"],
            kernel_functions=["do_set_pte", "guest_set_pgd", "demand_page"])
def seed_as_written(ctx):
    """Each place where the seed's page_tables.c breaks the spec (docs/lguest.md) is still shown by
    the checks: its counterexample, replayed on the seed-as-written code, breaks the named invariant
    in both formats, and the same sequence on the corrected (default) code breaks nothing. In the
    deep profile the exhaustive explorer must also find each finding on its own."""
    n = 0
    for finding in SEED_FINDINGS:
        want = lguest_findings.EXPECTED[finding]
        for fmt in ("2level", "pae"):
            seed = lguest_findings.replay(finding, fmt, "seed-as-written")
            fixed = lguest_findings.replay(finding, fmt, "corrected")
            n += 2
            if fixed.violations:
                return Result.refuted(fixed.counterexample(), examples=n,
                                      detail=f"the corrected code breaks the spec on {finding} ({fmt})")
            if want not in {v.inv for v in seed.violations}:
                cx = seed.counterexample()
                cx["violations"] = [f"seed finding {finding} ({fmt}) is no longer shown as {want}"] + \
                    cx["violations"]
                return Result.refuted(cx, examples=n, detail=f"the checks lost seed finding {finding}")
            if ctx.profile == "deep":
                out = lguest_exhaustive.explore(3, fmt, seed_findings=(finding,), expired=ctx.expired)
                n += out.transitions
                if out.status != "refuted":
                    return Result.unknown(f"exhaustive depth 3 did not rediscover {finding} ({fmt}): "
                                          f"{out.status}", examples=n)
            if ctx.expired():
                return Result.unknown(f"budget not completed (hang guard) after {n} replays", examples=n)
    return Result.passed(n, f"{len(SEED_FINDINGS)} seed findings reproduced on seed-as-written "
                            "and absent from the corrected code, both formats")


def _args_program(fmt: str, name: str, args: tuple) -> str:
    """A misuse call as a program: the guest as the check sets it up, the call, and the rule it
    breaks (refused with TypeError/ValueError, the state unchanged) as the failing assert."""
    return "\n".join([
        "from ptspec.impl.lguest import Lguest",
        f"lg = Lguest({fmt!r})", "lg.init()", "lg.new_pagetable(0x1000)", "before = lg.raw_state()",
        "try:", f"    lg.{name}{args!r}", "except (TypeError, ValueError):",
        "    assert lg.raw_state() == before, 'LG-C-ARGS raised but changed the state'", "else:",
        f"    raise AssertionError('LG-C-ARGS lg.{name}{args!r} was accepted')"])


@obligation("lg.args", engine="unit", invariants=["LG-C-ARGS"],
            kernel_functions=["guest_set_pte", "guest_set_pgd", "guest_new_pagetable", "demand_page"])
def bad_arguments(ctx):
    """Python misuse of the impl API (negative, too wide, bool, str, None arguments; unknown format
    or variant; host CPU out of range) raises TypeError/ValueError and leaves the raw state exactly
    as it was, in both formats."""
    n = 0
    bad_values = [-1, 1 << 32, True, "0x1000", None, 1.5]
    for fmt in ("2level", "pae"):
        lg = Lguest(fmt)
        lg.init()
        lg.new_pagetable(0x1000)
        calls = []
        for v in bad_values:
            calls += [("set_pte", (v, 0x1000, 0)), ("set_pte", (0x1000, v, 0)),
                      ("set_pgd", (v, 0)), ("set_pgd", (0x1000, v)), ("new_pagetable", (v,)),
                      ("fault", (v, 2)), ("fault", (0x1000, v)), ("pa", (v,)), ("run", (v,)),
                      ("guest_write", (v, 0)), ("set_stack", (v, 1))]
        calls += [("set_pte", (0x1000, 0x1000, 1 << (64 if fmt == "pae" else 32))), ("run", (2,)),
                  ("guest_write", (lg.pfn_limit * 4096, 0))]
        if fmt == "2level":
            calls.append(("set_pmd", (0, 0)))
        for name, args in calls:
            before = lg.raw_state()
            try:
                getattr(lg, name)(*args)
            except (TypeError, ValueError):
                pass
            else:
                return Result.refuted({"ops": _args_program(fmt, name, args), "violations": [
                    f"LG-C-ARGS lg.{name}{args!r} was accepted"], "tables": "", "kernel_function": name},
                    examples=n)
            n += 1
            if lg.raw_state() != before:
                return Result.refuted({"ops": _args_program(fmt, name, args), "violations": [
                    f"LG-C-ARGS lg.{name}{args!r} raised but changed the state"], "tables": "",
                    "kernel_function": name}, examples=n)
    for kw in ({"fmt": "3level"}, {"variant": "nope"}, {"seed_findings": ("nope",)},
               {"switcher_addr": 0xFFC0_0001}, {"arena_pages": 0}, {"pfn_limit": 1.5},
               {"host_cpus": True}, {"npgdirs": "4"}, {"rng_seed": 0.5}):
        try:
            Lguest(**kw)
        except (TypeError, ValueError):
            n += 1
        else:
            return Result.refuted({"ops": "\n".join([
                "from ptspec.impl.lguest import Lguest", "try:", f"    Lguest(**{kw!r})",
                "except (TypeError, ValueError):", "    pass", "else:",
                f"    raise AssertionError('LG-C-ARGS Lguest(**{kw!r}) was accepted')"]),
                "violations": [
                f"LG-C-ARGS Lguest(**{kw!r}) was accepted"], "tables": "", "kernel_function": ""},
                examples=n)
    return Result.passed(n, f"{n} misuse calls rejected without a state change")
