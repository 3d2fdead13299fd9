"""``python -m devtools.gpu check|part|payload`` (the shell scripts call these)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.gpu")
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="the GPU check (scripts/gpu-check.sh)")
    check.add_argument("--out", type=Path, default=Path("gpu-out"), help="where files go")
    check.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    check.add_argument("--parts", default="", help="comma-separated parts (default: all)")
    check.add_argument(
        "--payload", type=Path, default=Path(".gpu-payload"), help="the payload's call folders"
    )
    part = sub.add_parser("part", help="one part, in the check's child process")
    part.add_argument("name")
    part.add_argument("--result", type=Path, required=True)
    part.add_argument("--out", type=Path, required=True)
    part.add_argument("--budget", type=float, required=True)
    part.add_argument("--dry-run", action="store_true")
    part.add_argument("--minilm", default=None)
    sub.add_parser("payload", help="build the payload (scripts/gpu-payload.sh)", add_help=False)
    args, rest = ap.parse_known_args(argv)
    if args.command == "payload":
        from devtools.gpu.payload import main as payload_main

        return payload_main(rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    from devtools.gpu.check import BUDGETS, run_check, run_part

    if args.command == "part":
        return run_part(
            args.name,
            result=args.result,
            out=args.out,
            budget=args.budget,
            dry_run=args.dry_run,
            minilm=args.minilm,
        )
    parts = [p for p in args.parts.split(",") if p] or None
    unknown = sorted(set(parts or []) - set(BUDGETS))
    if unknown:
        ap.error(f"unknown parts {unknown}: choose from {', '.join(BUDGETS)}")
    return run_check(args.out, dry_run=args.dry_run, parts=parts, payload_dir=args.payload)


if __name__ == "__main__":
    sys.exit(main())
