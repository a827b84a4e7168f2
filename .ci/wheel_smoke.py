"""Packaging proof: build the wheel, install it (not editable) into a clean venv, run it from outside
the source tree, and compare it with the source tree's editable install.

What it checks, failing loudly (exit 1, one line per mismatch) on any difference:

* the wheel holds every package's ``__init__.py``, the kernel shim sources and the survivor
  explanations, and nothing outside ``ptspec/``;
* the installed ``ptspec`` imports from the clean venv, not from the source tree;
* ``ptspec list`` registers exactly the same obligations as the source tree (no check module lost
  or failing to import);
* one quick check per area (stage 2, hyp, mmu, lguest, z3, CrossHair, and the kernel-C checks)
  ends with the same status installed as in the source tree, and passes (the kernel-C checks may
  be unknown in both when the Debian source is not cached, and a check of a 6.x tree skipped in
  both when that tree is not in the cache);
* ``ptspec check-state`` judges raw states the installed impl writes (stage 2 and lguest, clean
  and broken) and ``ptspec explain`` prints statements of the installed spec;
* ``ptspec mutants`` plants a historical bug and a mechanical mutant in the installed impl: the bug
  is caught, the mutant survives and is explained by the installed survivor files.

Usage: ``.venv/bin/python .ci/wheel_smoke.py [--source-venv .venv] [--keep]`` from the repository
(``.ci/run`` calls it after pytest). Standard library only; it times each phase.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one quick check per area: the first pattern that matches an obligation of the profile wins
AREAS = {
    "stage2": ("quick", ["s2.units.stage2", "s2.errorpaths", "s2.units.*"]),
    "hyp": ("quick", ["s2.hyp.lockstep.4k-48", "*hyp.lockstep.*", "s2.units.hyp"]),
    "mmu": ("quick", ["mmu.units.fault.routing", "mmu.units.*"]),
    "lguest": ("quick", ["lg.units.model", "lguest.units.model", "lg.args", "lguest.args",
                         "lg*.units.*"]),
    "z3": ("quick", ["s2.z3.walk-index", "*.z3.walk-index", "*.z3.*"]),
    "crosshair": ("default", ["s2.crosshair.prot-attr", "*.crosshair.prot-attr", "*crosshair*"]),
}
KERNEL_C = ("kdiff.*", "kernel.*")          # every quick kernel-C check (they need the Debian source)
PASSING = {"passed", "proved"}

# a historical bug (caught) and an equivalent mechanical mutant (survives, explained)
CORPUS_BUG, CORPUS_CHECKS = "valid-update-ref", "s2.errorpaths"
SURVIVOR, SURVIVOR_CHECKS = "pgtable.hyp:HypMapData.__init__:const0", "s2.units.hyp"

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"wheel smoke: MISMATCH: {msg}", file=sys.stderr)


def run(cmd: list, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                       check=False)
    if check and p.returncode != 0:
        sys.exit(f"wheel smoke: FAILED: {' '.join(map(str, cmd))} exited {p.returncode}\n"
                 f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


class Phase:
    """Times a phase and prints it."""

    def __init__(self, name: str, times: dict):
        self.name, self.times = name, times

    def __enter__(self):
        self.t0 = time.monotonic()
        print(f"wheel smoke: {self.name} ...", flush=True)

    def __exit__(self, *exc):
        self.times[self.name] = time.monotonic() - self.t0


def copy_tree(dest: Path) -> None:
    """The files a fresh clone has (tracked, or new and not ignored), as they are now."""
    p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        sys.exit(f"wheel smoke: FAILED: git ls-files: {p.stderr.strip()}")
    for rel in filter(None, p.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def check_wheel_contents(wheel: Path, src: Path) -> None:
    """Every module and data file of the layers' folders (in the copy the wheel was built from) is
    in the wheel, under ptspec/; nothing else is."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for n in names:
        if not (n.startswith("ptspec/") or n.split("/")[0].endswith(".dist-info")):
            fail(f"wheel holds {n}, outside ptspec/")
    dirs = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, top in dirs.items():
        for f in (src / top).rglob("*"):
            if not f.is_file() or "__pycache__" in f.parts:
                continue
            inside = "/".join([name.replace(".", "/"), f.relative_to(src / top).as_posix()])
            if inside not in names:
                fail(f"wheel lacks {inside} ({f.relative_to(src)})")


def obligation_ids(ptspec: Path, cwd: Path, profile: str | None = None) -> list[str]:
    p = run([ptspec, "list"] + (["--profile", profile] if profile else []), cwd, check=False)
    if p.returncode != 0:
        fail(f"{ptspec} list exited {p.returncode}: {p.stderr.strip()[-500:]}")
    ids = [line.split("│")[1].strip() for line in p.stdout.splitlines()
           if line.startswith("│") and line.split("│")[1].strip()]
    title = [line for line in p.stdout.splitlines() if line.strip().endswith("obligation(s)")]
    if not title or int(title[0].split()[0]) != len(ids):
        fail(f"{ptspec} list: could not read its table (title {title[:1]}, {len(ids)} rows)")
    return ids


def pick(ids: list[str], patterns: list[str]) -> str | None:
    for pat in patterns:
        hits = [i for i in ids if fnmatch.fnmatchcase(i, pat)]
        if hits:
            return hits[0]
    return None


def verify(ptspec: Path, cwd: Path, profile: str, ids: list[str], out: Path) -> dict[str, str]:
    run([ptspec, "verify", "--profile", profile, "--only", ",".join(ids), "--json", out], cwd,
        check=False)
    if not out.exists():
        fail(f"{ptspec} verify --profile {profile} wrote no JSON report")
        return {}
    report = json.loads(out.read_text())
    got = {c["id"]: c["status"] for c in report["checks"]}
    # a check whose optional input is absent (a kernel tree not in the cache) is left out by verify
    # and named in "skipped": it is "skipped" here, never "missing"
    got.update({c["id"]: "skipped" for c in report.get("skipped", []) if c["id"] not in got})
    return got


# raw states written by the installed impl: a fresh stage-2 table with one block mapped (and the
# same with one refcount off by one), a booted lguest guest (and one seed-as-written step later)
STATES = """
import json, sys
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache
from ptspec.impl.pgtable.stage2 import KvmPgtable
from ptspec.impl.lguest import Lguest
from ptspec.proofs.lguest.guest import GuestLayout, KERNEL_ADDRESS
out = sys.argv[1]
pgt = KvmPgtable(12, 39); assert pgt.init() == 0
mc = KvmMmuMemoryCache(pgt.pool); mc.topup(8)
assert pgt.map(0x40000000, 0x200000, 0x80000000, 0b111, mc) == 0
s2 = pgt.snapshot()
json.dump(s2, open(out + "/s2-ok.json", "w"))
page = next(iter(s2["refcount"])); s2["refcount"][page] += 1
json.dump(s2, open(out + "/s2-bad.json", "w"))
lg = Lguest("2level", variant="seed-as-written", npgdirs=2, rng_seed=1)
L = GuestLayout("2level"); lg.init()
for addr, value in L.boot_writes():
    lg.guest_write(addr, value)
lg.guest_write(L.lguest_data, KERNEL_ADDRESS); lg.guest_data_init(L.lguest_data)
lg.new_pagetable(0x1000); lg.set_stack(0xc0008000, 1)
json.dump(lg.raw_state(), open(out + "/lg-ok.json", "w"))
lg.set_pte(0x1000, 0xc0007000, 0x21063)     # the seed's set-pte-stale finding
json.dump(lg.raw_state(), open(out + "/lg-bad.json", "w"))
"""


def check_states(wbin: Path, cwd: Path, work: Path) -> None:
    """check-state and explain of the installed CLI reach the installed spec."""
    run([wbin / "python", "-c", STATES, work], cwd)
    for name, code, want in (("s2-ok", 0, ""), ("s2-bad", 1, "S2-RC"), ("lg-ok", 0, ""),
                             ("lg-bad", 1, "LG-RC")):
        p = run([wbin / "ptspec", "check-state", work / f"{name}.json"], cwd, check=False)
        if p.returncode != code or want not in p.stdout:
            fail(f"ptspec check-state {name}.json: exit {p.returncode} (want {code}), "
                 f"{(p.stdout + p.stderr).strip()[-400:]}")
    for inv, words in (("S2-RC", "refcount"), ("LG-SWITCHER", "switcher")):
        p = run([wbin / "ptspec", "explain", inv], cwd, check=False)
        if p.returncode != 0 or words not in p.stdout or "not importable" in p.stdout:
            fail(f"ptspec explain {inv}: exit {p.returncode}, {p.stdout.strip()[:300]}")
    if not any(f.startswith(("ptspec check-state", "ptspec explain")) for f in failures):
        print("wheel smoke: check-state (stage 2, lguest) and explain answer from the installed spec")


def survivors_count(python: Path, cwd: Path) -> int:
    code = "from ptspec.proofs.cli.mutants import explained_survivors as e; print(len(e()))"
    p = run([python, "-c", code], cwd)
    return int(p.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source-venv", default=str(ROOT / ".venv"),
                    help="the source tree's editable install to compare with (default: .venv)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = ap.parse_args()
    src_bin = Path(args.source_venv).resolve() / "bin"
    work = Path(tempfile.mkdtemp(prefix="ptspec-wheel-"))
    outside = work / "run"                       # every installed command runs from here
    outside.mkdir()
    times: dict[str, float] = {}
    try:
        with Phase("build wheel", times):
            copy_tree(work / "src")
            run([src_bin / "python", "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist",
                 work / "src"], work)
            wheels = list((work / "dist").glob("ptspec-*.whl"))
            if len(wheels) != 1:
                sys.exit(f"wheel smoke: FAILED: expected one wheel, found {wheels}")
            check_wheel_contents(wheels[0], work / "src")
        with Phase("install wheel into a clean venv", times):
            run([sys.executable, "-m", "venv", work / "venv"], work)
            wbin = work / "venv" / "bin"
            run([wbin / "python", "-m", "pip", "install", "-q", wheels[0]], outside)
        with Phase("smoke: imports, list, verify, mutants", times):
            code = ("import json, ptspec, ptspec.spec, ptspec.impl, ptspec.proofs as p; "
                    "print(json.dumps([m.__file__ for m in (ptspec, ptspec.spec, ptspec.impl, p)]))")
            p = run([wbin / "python", "-c", code], outside)
            for f in json.loads(p.stdout):
                if not Path(f).resolve().is_relative_to((work / "venv").resolve()):
                    fail(f"installed ptspec imports {f}, not from the clean venv")

            src_ids = obligation_ids(src_bin / "ptspec", ROOT)
            whl_ids = obligation_ids(wbin / "ptspec", outside)
            if not src_ids or sorted(src_ids) != sorted(whl_ids):
                fail(f"ptspec list: source tree {len(src_ids)} obligations, wheel {len(whl_ids)}; "
                     f"only in source: {sorted(set(src_ids) - set(whl_ids))}, "
                     f"only in wheel: {sorted(set(whl_ids) - set(src_ids))}")
            else:
                print(f"wheel smoke: ptspec list: {len(whl_ids)} obligations in both")

            by_profile = {p: obligation_ids(src_bin / "ptspec", ROOT, p) for p in ("quick", "default")}
            chosen: dict[str, list[str]] = {}
            for area, (profile, patterns) in AREAS.items():
                ob = pick(by_profile[profile], patterns)
                if ob is None:
                    fail(f"no {profile} check for area {area} (patterns {patterns})")
                else:
                    chosen.setdefault(profile, []).append(ob)
            kernel = [i for i in by_profile["quick"] if any(fnmatch.fnmatchcase(i, k) for k in KERNEL_C)]
            if not kernel:
                fail(f"no quick kernel-C check (patterns {KERNEL_C})")
            chosen.setdefault("quick", []).extend(kernel)
            src_status: dict[str, str] = {}
            for profile, ids in chosen.items():
                src = verify(src_bin / "ptspec", ROOT, profile, ids, work / f"src-{profile}.json")
                whl = verify(wbin / "ptspec", outside, profile, ids, work / f"whl-{profile}.json")
                for ob in ids:
                    s, w = src.get(ob, "missing"), whl.get(ob, "missing")
                    src_status[ob] = s
                    print(f"wheel smoke: verify --profile {profile} {ob}: source {s}, wheel {w}")
                    if s != w:
                        fail(f"{ob}: {s} in the source tree, {w} installed")
                    if w not in PASSING and not (ob in kernel and s == w in ("unknown", "skipped")):
                        fail(f"{ob}: {w} installed (must pass)")
            if kernel and all(src_status.get(k) == "unknown" for k in kernel):
                print("wheel smoke: kernel-C checks unknown in both (Debian source not cached)")
            absent = [k for k in kernel if src_status.get(k) == "skipped"]
            if absent:
                print(f"wheel smoke: {len(absent)} kernel-C check(s) skipped in both (their kernel "
                      f"trees are not in the cache): {', '.join(absent)}")
            if kernel and all(src_status.get(k) == "skipped" for k in kernel):
                fail("every kernel-C check was skipped: the Debian source's checks must run or be unknown")

            check_states(wbin, outside, work)

            p = run([wbin / "ptspec", "mutants", "--only", CORPUS_BUG, "--checks", CORPUS_CHECKS,
                     "--profile", "quick"], outside, check=False)
            if p.returncode != 0 or "caught 1/1" not in p.stdout:
                fail(f"ptspec mutants --only {CORPUS_BUG}: exit {p.returncode}, "
                     f"{(p.stdout + p.stderr).strip()[-800:]}")
            p = run([wbin / "ptspec", "mutants", "--systematic", "--only", SURVIVOR, "--checks",
                     SURVIVOR_CHECKS, "--profile", "quick"], outside, check=False)
            if p.returncode != 0 or f"survived: {SURVIVOR}  -- explained" not in p.stdout:
                fail(f"ptspec mutants --systematic --only {SURVIVOR}: exit {p.returncode}, "
                     f"{(p.stdout + p.stderr).strip()[-800:]}")
            n_src, n_whl = survivors_count(src_bin / "python", ROOT), survivors_count(
                wbin / "python", outside)
            if n_src == 0 or n_src != n_whl:
                fail(f"explained survivors: {n_src} in the source tree, {n_whl} installed")
            print(f"wheel smoke: mutants: {CORPUS_BUG} caught, {SURVIVOR} explained; "
                  f"{n_whl} survivor explanations installed")
    finally:
        if args.keep:
            print(f"wheel smoke: work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("wheel smoke: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
          + f"; total {sum(times.values()):.1f}s")
    if failures:
        print(f"wheel smoke: FAILED ({len(failures)} mismatch(es))", file=sys.stderr)
        return 1
    print("wheel smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
