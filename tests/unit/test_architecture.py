"""The house rules, checked on the import graph (grimp reads every import statement,
function-level ones included): no import cycles anywhere in the four packages, the layer
rule of pyproject.toml's import-linter contracts, and the serving path free of the teacher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGES = ("coldstream", "stream_app", "trainer", "devtools")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over module -> directly imported module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    nodes = sorted(graph.modules)
    edges = {
        m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in graph.modules)
        for m in nodes
    }
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            for j in range(i, len(edges[node])):
                nxt = edges[node][j]
                if nxt not in index:
                    work.append((node, j + 1))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    g = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        g.add_module(m)
    g.add_import(importer="a.x", imported="a.y")
    g.add_import(importer="a.y", imported="a.x")
    g.add_import(importer="a.z", imported="a.x")
    assert strongly_connected(g) == [["a.x", "a.y"]]


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    assert strongly_connected(graph) == []


def test_layer_contracts_hold() -> None:
    res = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_only_the_cli_composes_the_layers(graph: grimp.ImportGraph) -> None:
    importers = {
        m
        for m in graph.modules
        if not m.startswith("devtools")
        and any(
            graph.direct_import_exists(importer=m, imported=other)
            for other in graph.modules
            if other.startswith("devtools")
        )
    }
    assert importers == {"coldstream.cli"}


def _documented_modules() -> tuple[set[str], set[str]]:
    """(files, folders) named in the module map of docs/architecture.md."""
    import re

    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    files: set[str] = set()
    folders: set[str] = set()
    section = None
    for line in text.splitlines():
        heading = re.match(r"^### `([\w/]+)/`", line)
        if heading:
            section = heading.group(1)
            continue
        if line.startswith("## "):
            section = None
        if section is None or not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([\w/.]+)`", first):
            (folders if name.endswith("/") else files).add(f"{section}/{name}".rstrip("/"))
    return files, folders


def test_module_map_in_the_docs_matches_the_tree() -> None:
    files, folders = _documented_modules()
    tree = {
        str(p.relative_to(REPO))
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    undocumented = {
        m for m in tree if m not in files and not any(m.startswith(f + "/") for f in folders)
    }
    assert undocumented == set(), (
        f"modules missing from docs/architecture.md: {sorted(undocumented)}"
    )
    missing = {f for f in files if f not in tree} | {d for d in folders if not (REPO / d).is_dir()}
    assert missing == set(), f"docs/architecture.md names what does not exist: {sorted(missing)}"
