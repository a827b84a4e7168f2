"""Joining the JSON reports of the N shards of one run into the report of the whole run.

Models: `ptspec merge`, the last job of a CI matrix. A shard report is one written with
`--shard I/N` by `ptspec verify`, `ptspec mutants` or `ptspec check-kernel`; it records "shard"
("I/N") and "selection" (every id of the unsharded run, in its order). The reports are refused, with
one line (``MergeError``), unless they are of one kind, one profile, one seed (and one mode, one
kernel tree), one selection, and exactly the shards 1..N once each, each holding exactly the ids the
split assigns it (``parallel.shard_ids``: the same function that made the split). The merged report
is in the format of an unsharded run: checks (or outcomes) in the selection's order, totals
recomputed, no "shard" and no "selection"; a check-module import error, which every verify shard
reports, appears once, first, as in an unsharded run.
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

from ptspec.proofs.runner import parallel
from ptspec.proofs.runner.registry import STATUSES, Result

KINDS = ("verify", "mutants", "check-kernel")
_SAME = {"verify": ("profile", "seed", "ptspec", "skipped"),
         "check-kernel": ("profile", "seed", "ptspec"),
         "mutants": ("profile", "seed", "mode", "escalate")}


class MergeError(Exception):
    """Why the reports cannot be merged (one line)."""


def load(path: str) -> dict[str, Any]:
    """A report file as a dict; a file that cannot be read or is not a JSON object is a MergeError."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise MergeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MergeError(f"{path}: not a JSON report: {exc}") from None
    except ValueError as exc:          # an integer literal of more digits than int() converts
        raise MergeError(f"{path}: not a JSON report: an integer too long to read "
                         f"({str(exc).split(':')[0]})") from None
    except RecursionError:
        raise MergeError(f"{path}: not a JSON report: nested too deeply to read") from None
    if not isinstance(data, dict):
        raise MergeError(f"{path}: not a ptspec report (a JSON object is expected)")
    return data


def kind_of(report: dict[str, Any]) -> str | None:
    """verify (checks), check-kernel (checks and a "kernel" object) or mutants (outcomes)."""
    if isinstance(report.get("outcomes"), list):
        return "mutants"
    if isinstance(report.get("checks"), list):
        return "check-kernel" if isinstance(report.get("kernel"), dict) else "verify"
    return None


def item_ids(kind: str, report: dict[str, Any]) -> list[str]:
    """The ids a shard report holds (verify's check-module import errors, "load:...", excluded)."""
    if kind == "mutants":
        return [o["target"] for o in report["outcomes"]]
    return [c["id"] for c in report["checks"] if not str(c["id"]).startswith("load:")]


def _shards(kind: str, reports: list[tuple[str, dict]]) -> tuple[int, list[tuple[str, dict]]]:
    """(N, the reports in shard order), after checking that shards 1..N are each there once."""
    seen: dict[int, str] = {}
    count = None
    ordered: list[tuple[int, str, dict]] = []
    for path, rep in reports:
        text = rep.get("shard")
        if not text:
            raise MergeError(f"{path}: not a shard report (no \"shard\"; run with --shard I/N)")
        try:
            i, n = parallel.parse_shard(text)
        except ValueError as exc:
            raise MergeError(f"{path}: {exc}") from None
        if count is None:
            count = n
        elif n != count:
            raise MergeError(f"{path}: shard {text} is of {n} shards, the others of {count}")
        if i in seen:
            raise MergeError(f"shard {i}/{n} is given twice ({seen[i]}, {path})")
        seen[i] = path
        ordered.append((i, path, rep))
    assert count is not None
    if len(seen) < count:      # the first few missing, without a loop over a huge count
        missing = [f"{i}/{count}" for i in islice((i for i in range(1, count + 1) if i not in seen), 5)]
        more = count - len(seen) - len(missing)
        raise MergeError(f"shard{'s' if count - len(seen) > 1 else ''} {', '.join(missing)}"
                         f"{f' and {more} more' if more else ''} missing "
                         f"(given: {', '.join(f'{i}/{count}' for i in sorted(seen))})")
    return count, [(path, rep) for _, path, rep in sorted(ordered, key=lambda t: t[0])]


def check(reports: list[tuple[str, dict]]) -> tuple[str, int, list[tuple[str, dict]]]:
    """(kind, N, reports in shard order), or a MergeError saying what does not fit."""
    if not reports:
        raise MergeError("no report given")
    kinds = []
    for path, rep in reports:
        k = kind_of(rep)
        if k is None:
            raise MergeError(f"{path}: not a report of ptspec verify, mutants or check-kernel")
        kinds.append(k)
    if len(set(kinds)) > 1:
        where = ", ".join(f"{p} is {k}" for (p, _), k in zip(reports, kinds))
        raise MergeError(f"the reports are of different kinds ({where})")
    kind = kinds[0]
    for path, rep in reports:
        _check_shape(kind, path, rep)
    n, ordered = _shards(kind, reports)
    first_path, first = ordered[0]
    for path, rep in ordered:
        if rep.get("interrupted"):
            raise MergeError(f"{path}: shard {rep['shard']} was interrupted ({rep['interrupted']}); "
                             "run it again")
        for key in _SAME[kind] + ("selection",):
            if rep.get(key) != first.get(key):
                raise MergeError(f"{path}: its {key} ({_short(rep.get(key))}) differs from that of "
                                 f"{first_path} ({_short(first.get(key))}): not shards of one run")
        if kind == "check-kernel":
            mine, theirs = rep["kernel"], first["kernel"]
            if (mine.get("tree"), mine.get("version")) != (theirs.get("tree"), theirs.get("version")):
                raise MergeError(f"{path}: judges Linux {mine.get('version')} at {mine.get('tree')}, "
                                 f"{first_path} Linux {theirs.get('version')} at {theirs.get('tree')}")
    selection = first.get("selection")
    if not isinstance(selection, list):
        raise MergeError(f"{first_path}: has no \"selection\" (written by an older ptspec?); "
                         "run the shards again")
    for path, rep in ordered:
        i, _ = parallel.parse_shard(rep["shard"])
        want, got = parallel.shard_ids(selection, i, n), item_ids(kind, rep)
        if sorted(got) != sorted(want):
            raise MergeError(f"{path}: shard {i}/{n} holds {len(got)} item(s), not the {len(want)} "
                             "its split assigns (a partial or edited report?)")
    return kind, n, ordered


_NUMBER = (int, float)
_CHECK_FIELDS = {"id": (str,), "status": (str,), "detail": (str, type(None)),
                 "examples": (int, type(None)), "counterexample": (dict, type(None)),
                 "rlimit": (int, type(None)), "seconds": (*_NUMBER, type(None)),
                 "cpu_seconds": (*_NUMBER, type(None)), "engine": (str, type(None)),
                 "invariants": (list, type(None))}
_OUTCOME_FIELDS = {"target": (str,), "kind": (str,), "status": (str,), "check": (str, type(None)),
                   "invariants": (list,), "expected": (list,), "expected_hit": (bool, type(None)),
                   "seconds": _NUMBER, "checks_run": (int,), "detail": (str,),
                   "counterexample": (dict, type(None)), "profile": (str,)}


def _check_shape(kind: str, path: str, rep: dict[str, Any]) -> None:
    """A MergeError naming the first key of a report that is not of the type its writer gives it
    (validated before anything reads it)."""
    def bad(where: str, want: str, value: Any) -> MergeError:
        return MergeError(f"{path}: {where}: expected {want}, got {_short(value)}")

    def typed(where: str, value: Any, types: tuple, want: str) -> None:
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise bad(where, want, value)

    if not isinstance(rep.get("shard"), (str, type(None))):
        raise bad("shard", 'a string like "1/2"', rep.get("shard"))
    for key, types, want in (("profile", (str, type(None)), "a string"),
                             ("seed", (int, type(None)), "an integer"),
                             ("selection", (list, type(None)), "a list of ids"),
                             ("jobs", (int, type(None)), "an integer"),
                             ("summary", (dict, type(None)), "an object"),
                             ("skipped", (list, type(None)), "a list"),
                             ("baseline", (dict, type(None)), "an object")):
        typed(key, rep.get(key), types, want)
    for i, item in enumerate(rep.get("selection") or []):
        typed(f"selection[{i}]", item, (str,), "an id (a string)")
    if kind == "mutants":
        if rep.get("mode") not in ("corpus", "systematic"):
            raise bad("mode", "corpus or systematic", rep.get("mode"))
        for k, v in (rep.get("baseline") or {}).items():
            typed(f"baseline[{_short(k)}]", v, (str,), "a status (a string)")
        items, fields, name = rep["outcomes"], _OUTCOME_FIELDS, "outcomes"
    else:
        if kind == "check-kernel":
            typed("kernel", rep["kernel"], (dict,), "an object")
        items, fields, name = rep["checks"], _CHECK_FIELDS, "checks"
    known = None
    if kind == "mutants" and rep.get("mode") == "corpus":
        from ptspec.proofs.mutation import corpus
        known = {b.id for b in corpus.all_bugs()}
    for i, item in enumerate(items):
        typed(f"{name}[{i}]", item, (dict,), "an object")
        extra = sorted(set(item) - set(fields), key=str) if kind == "mutants" else []
        if extra:
            raise MergeError(f"{path}: {name}[{i}].{extra[0]}: unknown key of an outcome")
        for key, types in fields.items():
            required = key in (("target", "kind", "status") if kind == "mutants" else ("id", "status"))
            if key not in item:
                if required:
                    raise MergeError(f"{path}: {name}[{i}].{key}: missing")
                continue
            typed(f"{name}[{i}].{key}", item[key], types, " or ".join(
                {str: "a string", int: "an integer", float: "a number", dict: "an object",
                 list: "a list", bool: "true or false", type(None): "null"}[t] for t in types))
        for key in ("invariants", "expected"):
            for j, x in enumerate(item.get(key) or []):
                typed(f"{name}[{i}].{key}[{j}]", x, (str,), "an id (a string)")
        cx = item.get("counterexample") or {}
        typed(f"{name}[{i}].counterexample.violations", cx.get("violations", []), (list,), "a list")
        if kind != "mutants" and item["status"] not in STATUSES:
            raise bad(f"{name}[{i}].status", f"one of {', '.join(STATUSES)}", item["status"])
        if known is not None and item["target"] not in known:
            raise MergeError(f"{path}: {name}[{i}].target: {_short(item['target'])} is not a bug of "
                             "the corpus")


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (ValueError, RecursionError):         # a circular or too deep value: named by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def result_of(entry: dict[str, Any]) -> Result:
    """A check entry of a JSON report back as a Result."""
    return Result(entry["status"], entry.get("detail") or "", entry.get("examples") or 0,
                  entry.get("counterexample"), entry.get("rlimit"), entry.get("seconds") or 0.0,
                  entry["id"], entry.get("engine") or "", list(entry.get("invariants") or []),
                  entry.get("cpu_seconds") or 0.0)


def merge(reports: list[tuple[str, dict]]) -> tuple[str, dict[str, Any]]:
    """(kind, the merged report) of (path, report) pairs, or a MergeError."""
    kind, n, ordered = check(reports)
    selection = ordered[0][1]["selection"]
    first = ordered[0][1]
    if kind == "mutants":
        return kind, _merge_mutants(first, ordered, selection)
    by_id: dict[str, dict] = {}
    loads: dict[str, dict] = {}
    for _, rep in ordered:
        for c in rep["checks"]:
            (loads if str(c["id"]).startswith("load:") else by_id).setdefault(c["id"], c)
    results = [result_of(c) for c in list(loads.values()) + [by_id[i] for i in selection]]
    from ptspec.proofs.report import results as report
    if kind == "verify":
        jobs = {rep.get("jobs") for _, rep in ordered}
        walls = [rep.get("summary", {}).get("wall_seconds") for _, rep in ordered]
        wall = max(walls) if all(isinstance(w, (int, float)) for w in walls) else None
        out = report.build_report(results, first["profile"], first["seed"],
                                  jobs=jobs.pop() if len(jobs) == 1 else None, wall_seconds=wall)
        out["skipped"] = first.get("skipped", [])
        return kind, out
    from ptspec.proofs.kernel.check import findings_of
    out = report.build_report(results, first["profile"], first["seed"])
    out["kernel"] = dict(first["kernel"], findings=findings_of(results))
    return kind, out


def _merge_mutants(first: dict, ordered: list[tuple[str, dict]], selection: list[str]) -> dict:
    from ptspec.proofs.mutation import mutants
    by_target = {o["target"]: o for _, rep in ordered for o in rep["outcomes"]}
    outcomes = [by_target[t] for t in selection]
    baseline: dict[str, str] = {}
    for _, rep in ordered:
        for check_id, status in (rep.get("baseline") or {}).items():
            baseline.setdefault(check_id, status)
    return {"profile": first["profile"], "escalate": first.get("escalate"), "seed": first["seed"],
            "mode": first["mode"], "baseline": baseline, "outcomes": outcomes,
            "score": mutants.score([mutants.Outcome(**o) for o in outcomes])}


def baseline_disagreements(ordered: list[tuple[str, dict]]) -> list[str]:
    """Checks whose baseline status differs between mutants shards (a loaded machine?)."""
    seen: dict[str, set[str]] = {}
    for _, rep in ordered:
        for check_id, status in (rep.get("baseline") or {}).items():
            seen.setdefault(check_id, set()).add(status)
    return sorted(c for c, statuses in seen.items() if len(statuses) > 1)
