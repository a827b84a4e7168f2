"""``ptspec diff-kernel``: the kernel's own 6.1 ``pgtable.c`` and impl on the same random operations.

For each geometry, seeded random operation sequences (``opgen``) run on a ``Pair`` (C and impl in
lock-step); after every operation everything is compared (``Pair.compare``: return values, every
descriptor word, every refcount, the pages in use and in the memcache, the TLB/cache log, warnings).
Every ``spec_every`` operations the spec's invariants and the step's contract are checked on the C
side's raw state as well. The first difference (or spec violation of the C side) stops the run; its
operation sequence is shrunk (greedy chunk removal, replayed from scratch, bounded in time) and
printed as pasteable Python with both tables in ptdump style.

``main(argv)`` is the command: exit 0 no difference, 1 a difference (or a C-side violation) found,
2 could not run (no cached source, no compiler, build error): never a pass.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field

from ptspec import spec

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import findings
from ptspec.proofs.kernel import fetch
from ptspec.proofs.kernel.tree import version_tuple
from ptspec.proofs.kernel import kernels
from ptspec.proofs.kernel.opgen import OpGen
from ptspec.proofs.kernel.pair import GEOMETRIES, Pair

RUN_LEN = 400           # operations per fresh pair of tables

# Where a released kernel departs from a spec contract (a catalogued finding for its version,
# ptspec.proofs.kernel.findings.FINDINGS), the C-side check counts the violation as that finding
# and reports the count, never silently; any other violation is reported. See docs/kernel.md.


@dataclass
class Finding:
    geometry: str
    profile: str
    kind: str                     # "difference" or "c-violation"
    ids: list
    lines: list                   # the differences / violations, as text
    ops: list                     # (name, args) from the fresh table on
    config: dict                  # Pair keyword arguments
    program: str = ""
    tables_c: str = ""
    tables_impl: str = ""

    def report(self) -> str:
        head = ("difference between the kernel's pgtable.c and impl" if self.kind == "difference"
                else "the kernel's pgtable.c breaks the spec")
        out = [f"kdiff: {head} ({self.geometry}, profile {self.profile}, "
               f"{len(self.ops)} operations after shrinking)"]
        out += [f"  {ln}" for ln in self.lines[:12]]
        out += ["", "operation sequence (pasteable):", self.program, "",
                "C side (kernel pgtable.c):", self.tables_c, "",
                f"impl (profile {self.profile}):", self.tables_impl]
        return "\n".join(out)


@dataclass
class Outcome:
    status: str                   # "passed", "refuted", "skipped"
    ops: int = 0
    seconds: float = 0.0
    c_seconds: float = 0.0
    impl_seconds: float = 0.0
    spec_checks: int = 0
    per_geometry: dict = field(default_factory=dict)
    known: dict = field(default_factory=dict)     # known kernel deviations set aside, by id
    finding: Finding | None = None
    reason: str = ""
    version: str = ""


def step_record(name, args, rets, force_pte=False):
    """The spec's step record (docs/interface.md) of one call on the C side, or None."""
    if name in ("free_memcache", "topup") or rets is None:
        return None
    ret = rets[0]
    if isinstance(ret, tuple) and ret[:1] == ("ValueError",):
        return None
    a = {k: v for k, v in args.items() if k not in ("mc", "fail")}
    out = {}
    if name == "map":
        a["force_pte"] = bool(force_pte)
    if name in ("mkyoung", "mkold"):
        out = {"pte": ret}
    elif name == "is_young":
        out, ret = {"young": bool(ret)}, int(bool(ret))
    elif name == "get_leaf":
        ret, pte, level = ret
        out = {"pte": pte, "level": level} if ret == 0 else {}
    elif name == "destroy":
        ret = 0
    return {"op": name, "args": a, "ret": ret, "out": out}


def split_known(found, step, tally, version=(6, 1, 0)):
    """Violations of the C side minus those that are catalogued findings of this kernel version
    (counted in tally by finding id)."""
    kept = []
    for v in found:
        f = findings.finding_for(v, step, version)
        if f is not None:
            tally[f.id] = tally.get(f.id, 0) + 1
        else:
            kept.append(v)
    return kept


def _with_pre(step, pre):
    """The step record with the spec's reading of its pre-state (a finding's ``where`` may read
    it: eagain-abort's pages left as they were)."""
    return step if step is None else dict(step, pre=pre)


def _version(config) -> tuple:
    """The kernel version of the C side a Pair config builds (its tree, or the cached source)."""
    src = config.get("src")
    if src is None:
        src, _ = fetch.locate()
    return version_tuple(src.version) if src is not None else (0, 0, 0)


def _apply(pair, name, args):
    return getattr(pair, name)(**args)


def replay(geometry, profile, config, ops, spec_every=0, strict=False):
    """Run ops on a fresh pair; (index, kind, lines, pair) of the first finding, or None."""
    pair = Pair(geometry, profile, **config)
    tally = {}
    if spec_every:
        pair.check_c()
    for n, (name, args) in enumerate(ops):
        rets = _apply(pair, name, args)
        diffs = pair.compare()
        if diffs:
            return n, "difference", [str(d) for d in diffs], pair
        if spec_every and (n + 1) % spec_every == 0:
            step = (step_record(name, args, rets, pair.c.force_pte_all) if spec_every == 1
                    else None)
            pre = pair._c_pre
            found = pair.check_c(step)
            if not strict:
                found = split_known(found, _with_pre(step, pre), tally, _version(config))
            if found:
                return n, "c-violation", [str(v) for v in found], pair
        elif spec_every:
            pair._c_pre = None
    return None


def _ids(kind, lines):
    return sorted({ln.split()[0] for ln in lines})


def shrink(geometry, profile, config, ops, kind, ids, spec_every, max_replays=200, strict=False):
    """The shortest sub-sequence keeping a finding of the same kind and ids: delta debugging
    (ptspec.proofs.engines.minimize.shortest), bounded in replays, never in time."""
    from ptspec.proofs.engines import minimize

    def run(cand):
        r = replay(geometry, profile, config, cand, spec_every, strict) if cand else None
        return r, (r[0] + 1 if r is not None else len(cand))

    def same(r):
        return r is not None and r[1] == kind and _ids(kind, r[2]) == ids

    cut = minimize.shortest(ops, run, same, max_replays)
    return cut.trace if cut.reproduced else ops


def _tables(raw):
    from ptspec.proofs.stage2.ptdump import render
    try:
        return render(spec.load_state(raw))
    except Exception as exc:       # a broken state may not be drawable; say so
        return f"(tables not drawable: {exc})"


def make_finding(geometry, profile, config, ops, kind, lines, spec_every, shrink_replays,
                 strict=False):
    ids = _ids(kind, lines)
    small = shrink(geometry, profile, config, ops, kind, ids, spec_every, shrink_replays, strict)
    r = replay(geometry, profile, config, small, spec_every, strict)
    if r is None:                  # cannot happen: the last replay kept the finding; be safe
        small, r = ops, replay(geometry, profile, config, ops, spec_every, strict)
    _, kind, lines, pair = r
    impl_raw = pair.i.snapshot()
    program = (pair.program + "\n" + DIFF_JUDGE if kind == "difference"
               else judged_c_program(pair.lines, small))
    return Finding(geometry, profile, kind, _ids(kind, lines), lines, small, config,
                   program=program, tables_c=_tables(pair.c.snapshot()),
                   tables_impl=_tables(impl_raw))


# The judge a difference's program ends in: compare the two sides after the last call.
DIFF_JUDGE = "d = p.compare()\nassert not d, '\\n'.join(map(str, d))"


def judged_c_program(pair_lines: list, ops: list) -> str:
    """A C-side violation's program: the Pair, then every operation followed by the comparison
    (which drains the call's events) and the spec's judgement of the C side's step, ending in the
    assert that fails on the last one."""
    from ptspec.proofs.engines.minimize import call
    n = next(k for k, ln in enumerate(pair_lines) if ln.startswith("p = Pair("))
    lines = pair_lines[:n] + ["from ptspec.proofs.kernel.differ import step_record",
                              pair_lines[n], "found = p.check_c()"]
    for name, args in ops:
        lines.append(f"r = {call('p.' + name, args)}")
        lines.append(f"p.compare(); found = p.check_c(step_record({name!r}, "
                     f"{call('dict', args)}, r, p.c.force_pte_all))")
    lines.append("assert not found, '\\n'.join(map(str, found))")
    return "\n".join(lines)


def run(geometries, ops_total, seed=0, profile=kernels.DEFAULT_PROFILE, spec_every=1,
        shrink_replays=200, progress=None, expired=None, strict=False, tree=None) -> Outcome:
    """Compare C and impl over ops_total operations spread over the geometries.

    ``tree``: a ``ptspec.proofs.kernel.tree.Tree`` to build the C side from (default: the cached
    Debian 6.1 source)."""
    if tree is not None:
        src = tree
    else:
        src, why = fetch.locate()
        if src is None:
            return Outcome("skipped", reason=why)
    try:
        for name in geometries:
            build.library(GEOMETRIES[name][0], src)
    except build.BuildError as exc:
        return Outcome("skipped", reason=str(exc))
    out = Outcome("passed", version=src.version)
    tally = out.known
    t0 = time.perf_counter()
    per = max(1, ops_total // len(geometries))
    for gi, name in enumerate(geometries):
        done = 0
        run_idx = 0
        while done < per:
            if expired is not None and expired():
                out.status = "unknown"
                out.reason = f"time budget ran out after {out.ops} operations"
                out.seconds = time.perf_counter() - t0
                return out
            rseed = (seed * 7919 + gi) * 100003 + run_idx
            rng = random.Random(rseed)
            fwb = rng.random() < 0.3
            config = {"fwb": fwb, "cmo": rng.random() < 0.85,
                      "flags": 1 if fwb and rng.random() < 0.3 else 0,     # KVM_PGTABLE_S2_NOFWB
                      "force_pte": rng.random() < 0.15}
            if tree is not None:
                config["src"] = tree
            pair = Pair(name, profile, **config)
            if spec_every:
                pair.check_c()
            gen = OpGen(pair.geom, rseed)
            ops = []
            n_run = min(RUN_LEN, per - done)
            for k in range(n_run):
                op = gen.next()
                ops.append(op)
                rets = _apply(pair, *op)
                diffs = pair.compare()
                out.ops += 1
                found = None
                if diffs:
                    found = ("difference", [str(d) for d in diffs])
                elif spec_every and (k + 1) % spec_every == 0:
                    out.spec_checks += 1
                    step = (step_record(op[0], op[1], rets, config["force_pte"])
                            if spec_every == 1 else None)
                    pre = pair._c_pre
                    v = pair.check_c(step)
                    if not strict:
                        v = split_known(v, _with_pre(step, pre), tally, version_tuple(src.version))
                    if v:
                        found = ("c-violation", [str(x) for x in v])
                elif spec_every:
                    pair._c_pre = None
                if found:
                    out.c_seconds += pair.c_seconds
                    out.impl_seconds += pair.i_seconds
                    out.status = "refuted"
                    out.finding = make_finding(name, profile, config, ops, found[0], found[1],
                                               spec_every, shrink_replays, strict)
                    out.seconds = time.perf_counter() - t0
                    return out
            out.c_seconds += pair.c_seconds
            out.impl_seconds += pair.i_seconds
            done += n_run
            run_idx += 1
            if progress:
                progress(f"{name}: {done}/{per} operations")
        out.per_geometry[name] = done
    out.seconds = time.perf_counter() - t0
    return out


def format_outcome(out: Outcome, profile: str) -> str:
    if out.status == "skipped":
        return f"kdiff: SKIPPED (not a pass): {out.reason}"
    lines = [f"kdiff: Linux {out.version} pgtable.c vs impl (profile {profile}): {out.ops} "
             f"operations compared, {out.spec_checks} C-side spec checks, "
             f"{out.seconds:.1f} s (C {out.c_seconds * 1e6 / max(out.ops, 1):.1f} us/op, "
             f"impl {out.impl_seconds * 1e6 / max(out.ops, 1):.1f} us/op)"]
    for g, n in out.per_geometry.items():
        lines.append(f"  {g}: {n} operations")
    for fid, n in sorted(out.known.items()):
        f = next(x for x in findings.FINDINGS if x.id == fid)
        lines.append(f"  C side: {n} {f.statement} violations are the catalogued finding {fid} "
                     f"(Linux {f.versions()}; this tree is {out.version}): {f.why}")
    if out.status == "unknown":
        lines.append(f"kdiff: UNKNOWN: {out.reason}")
    elif out.finding is None:
        lines.append("kdiff: no difference")
    else:
        lines.append(out.finding.report())
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ptspec diff-kernel", description=(
        "Run the kernel's own arch/arm64/kvm/hyp/pgtable.c (Debian linux-source-6.1) and impl on "
        "the same random operations; compare everything after every operation."))
    ap.add_argument("--ops", type=int, default=2000, help="operations in all (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--geometry", default="all",
                    help=f"one of {', '.join(GEOMETRIES)}, a comma list, or 'all'")
    ap.add_argument("--kernel-version", dest="kernel_version", default=kernels.DEFAULT_PROFILE,
                    choices=list(kernels.PROFILES),
                    help="the kernel version impl follows for the comparison (default 6.1)")
    ap.add_argument("--profile", dest="kernel_version", choices=list(kernels.PROFILES),
                    help=argparse.SUPPRESS)      # deprecated alias of --kernel-version
    ap.add_argument("--spec-every", type=int, default=1,
                    help="check the C side against the spec every N operations (0: never)")
    ap.add_argument("--strict-spec", action="store_true",
                    help="report catalogued findings of the tree's kernel version as violations too")
    ap.add_argument("--fetch", action="store_true",
                    help="download and cache linux-source-6.1 first if needed (~139 MB)")
    ap.add_argument("--fetch-only", action="store_true",
                    help="only download and cache linux-source-6.1 if needed, then exit "
                         "(the setup step of the README)")
    args = ap.parse_args(argv)
    if args.fetch_only:
        try:
            fetch.fetch(progress=lambda m: print(m, file=sys.stderr))
        except fetch.FetchError as exc:
            print(f"kdiff: could not fetch the kernel source: {exc}")
            return 2
        return 0
    if args.geometry == "all":
        geoms = list(GEOMETRIES)
    else:
        geoms = [g.strip() for g in args.geometry.split(",") if g.strip()]
        bad = [g for g in geoms if g not in GEOMETRIES]
        if bad or not geoms:
            ap.error(f"unknown geometry {', '.join(bad) or '(none)'}; choose from "
                     f"{', '.join(GEOMETRIES)} or 'all'")
    if args.ops <= 0:
        ap.error("--ops must be positive")
    if args.fetch:
        try:
            fetch.fetch(progress=lambda m: print(m, file=sys.stderr))
        except fetch.FetchError as exc:
            print(f"kdiff: SKIPPED (not a pass): {exc}")
            return 2
    out = run(geoms, args.ops, args.seed, args.kernel_version, args.spec_every,
              progress=lambda m: print(m, file=sys.stderr), strict=args.strict_spec)
    print(format_outcome(out, args.kernel_version))
    return {"passed": 0, "refuted": 1}.get(out.status, 2)


if __name__ == "__main__":
    sys.exit(main())
