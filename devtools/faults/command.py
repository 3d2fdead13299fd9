"""``coldstream bench faults``: the fault scenarios by name on larger streams, a table and
``reports/faults.json`` (registered by :mod:`devtools.commands`)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode
from devtools.faults.accounting import FaultResult
from devtools.faults.scenarios import REGISTRY, run_scenario

__all__ = ["add_arguments", "run", "table"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenarios", default=",".join(REGISTRY), help="comma-separated subset")
    p.add_argument(
        "--scale", type=float, default=2.0, help="stream size relative to the fault suite"
    )
    p.add_argument("--out", default="reports/faults.json", help="the JSON report")
    p.add_argument("--workdir", default=None, help="keep logs here (default: a temp dir)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other rows of --out: replace the rows of the scenarios run, append new ones",
    )
    p.add_argument(
        "--docs",
        action="store_true",
        help="run nothing: regenerate the table of docs/reliability.md from --out",
    )
    p.add_argument(
        "--worker-tree",
        default=None,
        help="run the workers from another checkout (PYTHONPATH), e.g. a git worktree of an "
        "older commit, to show a finding on the code before its fix (default: this one)",
    )
    p.add_argument(
        "--bootstrap",
        default=None,
        help="an Apache Kafka to use (default: start one); broker restarts always get a private one",
    )


def run(args: argparse.Namespace) -> int:
    if args.docs:
        write_docs(Path(args.out))
        print(f"regenerated the table of {DOCS} from {args.out}")
        return ExitCode.OK
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(
            f"unknown scenarios: {sorted(set(unknown))}; known: {', '.join(REGISTRY)}",
            file=sys.stderr,
        )
        return ExitCode.BAD_INPUT
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="coldstream-faults-"))
    )
    shared: dict[str, Any] = {"bootstrap": args.bootstrap}
    if args.worker_tree:
        tree = Path(args.worker_tree).resolve()
        if not (tree / "stream_app").is_dir():
            print(f"--worker-tree {tree}: no stream_app/ there", file=sys.stderr)
            return ExitCode.BAD_INPUT
        shared["worker_env"] = {"PYTHONPATH": str(tree)}
    results: list[FaultResult] = []
    try:
        for name in names:
            t = time.monotonic()
            try:
                r = run_scenario(name, scale=args.scale, workdir=workdir, shared=shared)
            except Exception as e:  # noqa: BLE001 - one failed scenario is a row, not a crash
                r = FaultResult(
                    name, 0, 0, 0, -1, -1, None, {"error": f"{type(e).__name__}: {e}"[:500]}
                )
            r.details["wall_seconds"] = round(time.monotonic() - t, 1)
            results.append(r)
            print(table([r], header=len(results) == 1), flush=True)
    finally:
        if "kafka" in shared:
            shared["kafka"].stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    if args.merge and out.is_file():
        rows = merge_rows(json.loads(out.read_text()), rows)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\nwritten {out} (logs in {workdir})")
    return ExitCode.OK if all(r.lost == 0 for r in results) else ExitCode.FAILURE


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with each row of ``new`` in place of the old row of the same scenario name,
    or appended (the order of ``old`` kept)."""
    by_name = {r["scenario"]: r for r in new}
    merged = [by_name.pop(r["scenario"], r) for r in old]
    return merged + [r for r in new if r["scenario"] in by_name]


DOCS = Path("docs/reliability.md")
"""The page whose fault table is generated from ``reports/faults.json``."""
_BEGIN = (
    "<!-- faults table: generated from reports/faults.json by coldstream bench faults --docs -->"
)
_END = "<!-- end of faults table -->"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The fault table of ``docs/reliability.md`` from the report's rows."""
    lines = [
        "| scenario | events in | recs out | DLQ | lost | duplicated | recovery s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = r.get("recovery_seconds")
        lines.append(
            f"| {r['scenario']} | {r['events_in']} | {r['outputs']} | {r['dlq']} | {r['lost']} "
            f"| {r['duplicated']} | {'–' if rec is None else f'{rec:.2f}'} |"
        )
    return "\n".join(lines)


def write_docs(report: Path, docs: Path = DOCS) -> None:
    """Replace the generated table in ``docs`` with the rows of ``report``."""
    text = docs.read_text(encoding="utf-8")
    begin, end = text.index(_BEGIN), text.index(_END)
    table_md = markdown(json.loads(report.read_text(encoding="utf-8")))
    docs.write_text(text[: begin + len(_BEGIN)] + "\n" + table_md + "\n" + text[end:])


def table(rows: Sequence[FaultResult], header: bool = True) -> str:
    cols = ("scenario", "events in", "recs out", "DLQ", "lost", "duplicated", "recovery s")
    widths = (46, 9, 9, 6, 5, 10, 10)
    lines = []
    if header:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        rec = "-" if r.recovery_seconds is None else f"{r.recovery_seconds:.2f}"
        vals = (r.scenario, r.events_in, r.outputs, r.dlq, r.lost, r.duplicated, rec)
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(vals, widths, strict=True)))
    return "\n".join(lines)
