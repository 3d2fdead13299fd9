"""Helpers for the deployment checks: finding the external tools, rendering manifests.

The tools are installed by ``.ci/install-deploy-tools.sh`` (CI runs it). A missing tool
FAILS the test that needs it, with the command to install it: these checks never pass by
skipping. Tools are looked up in ``$COLDSTREAM_DEPLOY_TOOLS`` (default
``<repo>/.cache/deploy-tools``: ``bin/`` and ``venv/bin/``), then on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `deploy` is repository tooling, not an installed package
    sys.path.insert(0, str(REPO))

OVERLAYS = ("cpu", "gpu")
INSTALL_HINT = "run .ci/install-deploy-tools.sh (CI runs it before the tests)"


def tools_dir() -> Path:
    return Path(os.environ.get("COLDSTREAM_DEPLOY_TOOLS", REPO / ".cache" / "deploy-tools"))


def find_tool(name: str) -> str:
    """Path of an installed tool; fails the calling test when it is missing."""
    for d in (tools_dir() / "bin", tools_dir() / "venv" / "bin"):
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return str(d / name)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        f"{name} not found in {tools_dir()}/bin, {tools_dir()}/venv/bin or PATH: {INSTALL_HINT}",
        pytrace=False,
    )


def run_tool(
    args: list[str], *, timeout: float = 120, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def build(kustomize: str, directory: str) -> str:
    """``kustomize build directory`` (relative to the repository root)."""
    res = run_tool([kustomize, "build", directory])
    assert res.returncode == 0, f"kustomize build {directory} failed:\n{res.stderr}"
    return res.stdout


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one resource of ``kind`` (and ``name``) in ``docs``."""
    hits = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]
