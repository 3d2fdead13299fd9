"""Benchmarks (``coldstream bench ...``): each prints a table and writes JSON under ``reports/``.
Figures are measured, never asserted as wall-clock limits in tests."""

from __future__ import annotations

import json
from pathlib import Path


def int_list(text: str) -> list[int]:
    """``"1,8,64"`` -> ``[1, 8, 64]`` (an ``argparse`` type for a swept dimension)."""
    return [int(x) for x in text.split(",") if x.strip()]


def float_list(text: str) -> list[float]:
    """``"1,2.5"`` -> ``[1.0, 2.5]`` (an ``argparse`` type for a swept dimension)."""
    return [float(x) for x in text.split(",") if x.strip()]


def run_facts() -> dict[str, object]:
    """When and where a report was measured: date (UTC), machine, 1-minute load average
    (figures are only comparable within one run)."""
    import os
    import platform
    import time

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def write_report(path: Path, report: dict[str, object]) -> None:
    """Write ``report`` as indented JSON at ``path`` (folders made) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
