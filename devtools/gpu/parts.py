"""The measured parts of the GPU check, each run in a child process of its own
(``python -m devtools.gpu part NAME``) by :mod:`devtools.gpu.check`.

A part gets a :class:`Context` (the mode's sizes, a deadline, the output folder) and returns
its figures; a step inside it that the deadline cannot afford, or that this machine cannot
run (no FAISS, no FAISS GPU, no teacher weights), is recorded with ``outcome: skipped`` and
why. A part raises to fail. Imports: numpy, torch and the modules of this repository that
import nothing else at module level (``stream_app.index``, ``coldstream.core.student``,
``trainer.student.training``); pytest, FAISS, transformers and peft where a part needs them.

* ``tests`` -- the ``gpu``-marked tests whose files import on this machine (the others are
  named with the module they lack), JUnit XML in ``gpu-tests.xml``;
* ``student`` -- users embedded per second (histories packed, moved, encoded, read back: what
  a serving micro-batch does) at batches of :attr:`Sizes.batches`, on the device and on this
  machine's CPUs;
* ``search`` -- at :attr:`Sizes.items` items: :class:`~stream_app.index.TorchFlatIndex` on the
  device, FAISS CPU IVF (:class:`~stream_app.index.IvfIndex`, nprobe tuned to recall 0.97),
  FAISS GPU flat and IVF where FAISS sees a GPU: users/s per batch, recall@10 against exact
  search (:func:`~stream_app.index.exact_topk`) on sample queries, build seconds;
* ``train`` -- :func:`trainer.student.training.train_student` (sampled softmax, top-100 KD) on a
  synthetic catalogue, on the device, and a few batches of it on the CPUs;
* ``finetune`` -- the MiniLM teacher: encode rate, then one epoch of LoRA fine-tuning
  (:func:`trainer.teacher.lora.fit_lora`) on a tiny synthetic set of histories.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PARTS", "Context", "PartFailed", "PartSkipped", "Sizes", "gpu_test_files", "one_line"]


class PartFailed(RuntimeError):
    """A part that failed but has figures to keep (``figures``)."""

    def __init__(self, reason: str, figures: dict[str, Any]) -> None:
        super().__init__(reason)
        self.figures = figures


class PartSkipped(RuntimeError):
    """A part that cannot run on this machine (the reason says why)."""


RECALL_QUERIES = 256
"""Sample queries of the recall measurements (exact search on the CPU is their cost)."""


@dataclass(frozen=True)
class Sizes:
    """What each part measures at; :data:`GPU_SIZES` on a GPU, :data:`DRY_SIZES` in the CPU
    dry run (same code, tiny sizes)."""

    batches: tuple[int, ...]
    student_items: int
    history: int
    items: tuple[int, ...]
    dim: int
    train_items: int
    train_users: int
    train_epochs: int
    cpu_train_batches: int
    teacher_items: int
    teacher_histories: int
    min_timing_s: float
    """Each throughput figure: repeats until at least this long."""


GPU_SIZES = Sizes(
    batches=(256, 4096),
    student_items=100_000,
    history=20,
    items=(100_000, 1_000_000),
    dim=64,
    train_items=100_000,
    train_users=4_000,
    train_epochs=2,
    cpu_train_batches=8,
    teacher_items=4_096,
    teacher_histories=2_048,
    min_timing_s=1.0,
)
DRY_SIZES = Sizes(
    batches=(16, 64),
    student_items=500,
    history=8,
    items=(2_000, 5_000),
    dim=16,
    train_items=2_000,
    train_users=40,
    train_epochs=1,
    cpu_train_batches=2,
    teacher_items=80,
    teacher_histories=8,
    min_timing_s=0.02,
)


@dataclass
class Context:
    """What a part knows: the mode, its sizes, its deadline, where files go."""

    dry_run: bool
    out: Path
    deadline: float
    """``time.monotonic()`` by which the part must have returned."""
    minilm: Path | None = None
    """The teacher's folder (config, tokenizer, weights), or ``None`` (did not travel)."""

    @property
    def sizes(self) -> Sizes:
        return DRY_SIZES if self.dry_run else GPU_SIZES

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def device(self) -> str:
        """The torch device measured: ``cuda``, or ``cpu`` in the dry run."""
        return "cpu" if self.dry_run else "cuda"

    @property
    def cpu_threads(self) -> int:
        """Threads of the CPU baselines: every CPU of the GPU machine; 2 in the dry run."""
        return min(2, os.cpu_count() or 1) if self.dry_run else (os.cpu_count() or 1)


def _skipped(reason: str) -> dict[str, Any]:
    return {"outcome": "skipped", "reason": reason}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(fn: Callable[[], object], items_per_call: int, min_s: float, device: str) -> float:
    """Items per second of ``fn`` (two warm-up calls, then repeats for at least ``min_s``)."""
    for _ in range(2):
        fn()
    _sync(device)
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync(device)
        took = time.perf_counter() - t0
        if took >= min_s or calls >= 1000:
            return round(items_per_call * calls / took, 1)


# ----------------------------------------------------------------------------- tests


def gpu_test_files(repo: Path) -> list[Path]:
    """Test files with a ``gpu``-marked test (``pytest.mark.gpu`` in their text)."""
    return sorted(
        p for p in (repo / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text("utf-8")
    )


def _module_of(repo: Path, path: Path) -> str:
    return ".".join(path.relative_to(repo).with_suffix("").parts)


def _importable(repo: Path, files: list[Path], timeout: float) -> dict[str, str | None]:
    """``{file: None | "No module named 'x'"}``: which test files import here (one child)."""
    code = (
        "import importlib, json, sys\n"
        "out = {}\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(m); out[m] = None\n"
        "    except ImportError as e:\n"
        "        out[m] = str(e).splitlines()[0]\n"
        "print(json.dumps(out))\n"
    )
    mods = [_module_of(repo, f) for f in files]
    res = subprocess.run(
        [sys.executable, "-c", code, *mods],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    import json

    found = json.loads(res.stdout.strip().splitlines()[-1])
    return {str(f.relative_to(repo)): found[m] for f, m in zip(files, mods, strict=True)}


def part_tests(ctx: Context) -> dict[str, Any]:
    repo = Path.cwd()
    files = gpu_test_files(repo)
    status = _importable(repo, files, timeout=max(10.0, ctx.left() / 3))
    runnable = [f for f, why in status.items() if why is None]
    junit = ctx.out / "gpu-tests.xml"
    figures: dict[str, Any] = {
        "junit": junit.name,
        "files": {
            f: ("runs" if why is None else f"not importable here: {why}")
            for f, why in status.items()
        },
    }
    if not runnable:
        raise RuntimeError("no gpu-marked test file imports on this machine")
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={junit}", "-o", "junit_family=xunit2", *runnable]
    left = max(5.0, ctx.left() - 2)
    try:
        res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"pytest ran past the part's budget ({left:.0f} s)") from e
    print(res.stdout[-4000:], res.stderr[-2000:], sep="\n", flush=True)
    counts = _junit_counts(junit)
    figures.update(counts)
    figures["pytest_exit"] = res.returncode
    if counts["failed"] or counts["errors"] or res.returncode not in (0, 5):
        raise RuntimeError(
            f"{counts['failed']} failed, {counts['errors']} errors of {counts['tests']} "
            f"(pytest exit {res.returncode}; see {junit.name})"
        )
    return figures


def _junit_counts(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    skips = [c.find("skipped") for c in cases]
    reasons = sorted({(s.get("message") or "")[:120] for s in skips if s is not None})
    skipped = sum(1 for s in skips if s is not None)
    return {
        "tests": len(cases),
        "passed": len(cases) - failed - errors - skipped,
        "failed": failed,
        "errors": errors,
        "skipped": skipped,
        "skip_reasons": reasons[:5],
    }


# ----------------------------------------------------------------------------- student


def part_student(ctx: Context) -> dict[str, Any]:
    import torch

    from coldstream.core.student import Student, StudentConfig, pack_histories

    sz = ctx.sizes
    cfg = StudentConfig(n_items=sz.student_items, dropout=0.0)
    rng = np.random.default_rng(0)
    text = torch.from_numpy(rng.standard_normal((sz.student_items, cfg.text_dim), np.float32))
    biggest = max(sz.batches)
    lengths = rng.integers(1, sz.history + 1, biggest)
    rows = [rng.integers(0, sz.student_items, n).tolist() for n in lengths]
    types = [rng.integers(0, 2, n).tolist() for n in lengths]

    def users_per_s(device: str, batch: int) -> float:
        model = Student(cfg).to(device).eval()
        with torch.inference_mode():
            table = model.item_vectors(
                text.to(device), torch.arange(sz.student_items, device=device)
            )

        def step() -> None:
            idx, typ, mask = pack_histories(rows[:batch], types[:batch], cfg.max_len, device)
            with torch.inference_mode():
                model.encode_indexed(table, idx, typ, mask).cpu()

        return _rate(step, batch, sz.min_timing_s, device)

    torch.set_num_threads(ctx.cpu_threads)
    out_rows = []
    for batch in sz.batches:
        on_device = users_per_s(ctx.device, batch)
        on_cpu = users_per_s("cpu", batch)
        out_rows.append(
            {
                "batch": batch,
                "device_users_per_s": on_device,
                "cpu_users_per_s": on_cpu,
                "speedup": round(on_device / on_cpu, 2),
            }
        )
    return {
        "device": ctx.device,
        "cpu_threads": ctx.cpu_threads,
        "model": {k: getattr(cfg, k) for k in ("n_items", "text_dim", "dim", "encoder", "max_len")},
        "history_events": f"1..{sz.history}",
        "what": "pack_histories + move + encode_indexed + read back, per batch",
        "rows": out_rows,
    }


# ----------------------------------------------------------------------------- search


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Item vectors around ``n / 500`` centres (what IVF lists can split), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 500), dim), np.float32)
    out = centres[rng.integers(0, centres.shape[0], n)]
    out += 0.3 * rng.standard_normal((n, dim), np.float32)
    return out


def _faiss() -> tuple[Any, str | None]:
    try:
        import faiss
    except ImportError as e:
        return None, f"faiss is not importable here ({e}; the faiss-cpu wheel did not travel)"
    return faiss, None


def _measure_index(
    ctx: Context,
    make: Callable[[], Any],
    sample: np.ndarray,
    truth: np.ndarray,
    queries: np.ndarray,
) -> dict[str, Any]:
    """Build the index ``make()`` gives, then its recall@10 on ``sample`` against ``truth``
    and its users/s per batch; an exception is this implementation's failure, not the
    part's end."""
    from stream_app.index import RECALL_K, recall_at

    try:
        index = make()
        t0 = time.perf_counter()
        report = index.build(sample=sample)
        build_s = round(time.perf_counter() - t0, 2)
        _, found = index.search(sample, RECALL_K)
        row: dict[str, Any] = {
            "outcome": "passed",
            "device": index.device,
            "build_s": build_s,
            "recall_at_10": round(recall_at(found, truth), 4),
            "users_per_s": {},
        }
        if report.nlist:
            row.update(nlist=report.nlist, nprobe=report.nprobe, codes=report.codes)
        for batch in ctx.sizes.batches:
            search = functools.partial(index.search, queries[:batch], RECALL_K)
            row["users_per_s"][str(batch)] = _rate(search, batch, ctx.sizes.min_timing_s, "cpu")
        return row
    except Exception as e:
        return {"outcome": "failed", "reason": one_line(e)}


def part_search(ctx: Context) -> dict[str, Any]:
    import torch

    from stream_app.index import (
        RECALL_K,
        GpuFlatIndex,
        GpuIvfIndex,
        IndexConfig,
        IvfIndex,
        TorchFlatIndex,
        VectorStore,
        exact_topk,
        gpu_available,
        omp_threads,
    )

    sz = ctx.sizes
    torch.set_num_threads(ctx.cpu_threads)
    faiss, no_faiss = _faiss()
    no_faiss_gpu: str | None = no_faiss
    if faiss is not None and not gpu_available():
        no_faiss_gpu = (
            f"faiss {faiss.__version__} sees no GPU here (a CPU build: FAISS GPU does not "
            "travel, see devtools/gpu/payload.py)"
        )
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((max(sz.batches), sz.dim), np.float32)
    sample = rng.standard_normal((RECALL_QUERIES, sz.dim), np.float32)
    big = str(max(sz.batches))
    rows: list[dict[str, Any]] = []
    for n in sz.items:
        row: dict[str, Any] = {"items": n}
        rows.append(row)
        if rows[:-1] and "impls" in rows[-2]:
            need = _projected_s(rows[-2], n)
            if need > ctx.left():
                row.update(
                    _skipped(f"would overrun: ~{need:.0f} s projected, {ctx.left():.0f} s left")
                )
                continue
        t_size = time.perf_counter()
        store = VectorStore.adopt(clustered(n, sz.dim, seed=n))
        t0 = time.perf_counter()
        _, truth = exact_topk(store, sample, RECALL_K)
        row["exact_truth_s"] = round(time.perf_counter() - t0, 2)
        measure = functools.partial(
            _measure_index, ctx, sample=sample, truth=truth, queries=queries
        )
        impls: dict[str, Any] = {
            "torch_exact": measure(
                functools.partial(TorchFlatIndex, sz.dim, store=store, device=ctx.device)
            )
        }
        if faiss is None:
            impls["faiss_cpu_ivf"] = _skipped(str(no_faiss))
        else:
            with omp_threads(ctx.cpu_threads):
                ivf = functools.partial(
                    IvfIndex, sz.dim, store=store, config=IndexConfig(kind="ivf")
                )
                impls["faiss_cpu_ivf"] = measure(ivf)
        if no_faiss_gpu is None:
            impls["faiss_gpu_flat"] = measure(functools.partial(GpuFlatIndex, sz.dim, store=store))
            impls["faiss_gpu_ivf"] = measure(functools.partial(GpuIvfIndex, sz.dim, store=store))
        else:
            impls["faiss_gpu_flat"] = _skipped(no_faiss_gpu)
            impls["faiss_gpu_ivf"] = _skipped(no_faiss_gpu)
        row["impls"] = impls
        torch_rate = impls["torch_exact"].get("users_per_s", {}).get(big)
        ivf_rate = impls["faiss_cpu_ivf"].get("users_per_s", {}).get(big)
        row["torch_exact_vs_faiss_cpu_ivf"] = (
            round(torch_rate / ivf_rate, 2) if torch_rate and ivf_rate else None
        )
        row["outcome"] = (
            "failed" if any(v["outcome"] == "failed" for v in impls.values()) else "passed"
        )
        row["wall_s"] = round(time.perf_counter() - t_size, 2)
        del store
    result = {
        "dim": sz.dim,
        "recall_queries": RECALL_QUERIES,
        "batches": list(sz.batches),
        "cpu_threads": ctx.cpu_threads,
        "faiss": None if faiss is None else faiss.__version__,
        "sizes": rows,
    }
    failed = [
        f"{r['items']} items {name}: {v['reason']}"
        for r in rows
        for name, v in r.get("impls", {}).items()
        if v["outcome"] == "failed"
    ]
    if failed:
        raise PartFailed("; ".join(failed), result)
    return result


def _projected_s(done: dict[str, Any], n: int) -> float:
    """Seconds a catalogue of ``n`` items should take, from the row of a smaller one: builds
    and the exact truth grow with the items (x1.3: IVF a little faster), timing loops not."""
    grows = done["exact_truth_s"] + sum(v.get("build_s", 0.0) for v in done["impls"].values())
    return 1.3 * grows * n / done["items"] + 1.5 * (done["wall_s"] - grows)


def one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return re.sub(r"\s+", " ", text)[:300]


# ----------------------------------------------------------------------------- train


def part_train(ctx: Context) -> dict[str, Any]:
    import torch

    from coldstream.core.student import StudentConfig
    from trainer.student.training import (
        TrainConfig,
        build_examples,
        prefix_position_arrays,
        train_student,
    )
    from trainer.teacher.topk import TopK

    sz = ctx.sizes
    n = sz.train_items
    rng = np.random.default_rng(2)
    text = rng.standard_normal((n, 384), np.float32)
    seqs = [(rng.integers(0, n, 21), rng.integers(0, 2, 21)) for _ in range(sz.train_users)]
    users, ts = prefix_position_arrays(seqs, max_prefix=20, extra_per_user=0, seed=0)
    student = StudentConfig(n_items=n, text_dim=384, dim=64, max_len=20)

    def run(device: str, examples: int, epochs: int, share: float) -> dict[str, Any]:
        ex = build_examples(seqs, (users[:examples], ts[:examples]), 20)
        ex.kd_row = torch.arange(len(ex))
        start = rng.integers(0, n, (len(ex), 1))
        ids = torch.as_tensor((start + np.arange(100)) % n)  # 100 distinct items per row
        logits = torch.sort(torch.randn(len(ex), 100), dim=1, descending=True).values
        cfg = TrainConfig(
            epochs=epochs,
            softmax="sampled",
            teacher="model",
            alpha=0.5,
            temperature=2.0,
            patience=epochs + 1,
            max_seconds=max(2.0, share * ctx.left()),
            seed=0,
        )
        t0 = time.perf_counter()
        _, curve = train_student(
            ex,
            text_vecs=text,
            id_index=np.arange(n),
            catalogue=np.ones(n, bool),
            student_config=student,
            config=cfg,
            teacher_logits=TopK(ids=ids, logits=logits),
            progress=False,
            device=device,
        )
        batches = -(-len(ex) // cfg.batch_size) * len(curve)
        train_s = sum(r["train_seconds"] for r in curve)
        return {
            "examples": len(ex),
            "epochs": len(curve),
            "wall_s": round(time.perf_counter() - t0, 2),
            "s_per_batch": round(train_s / batches, 4),
            "examples_per_s": round(len(ex) * len(curve) / max(train_s, 1e-9), 1),
            "final_loss": round(float(curve[-1]["loss"]), 4),
        }

    torch.set_num_threads(ctx.cpu_threads)
    on_device = run(ctx.device, len(users), sz.train_epochs, 0.6)
    on_cpu = run("cpu", sz.cpu_train_batches * 256, 1, 0.9)
    return {
        "items": n,
        "path": "sampled softmax (1,024 negatives) + top-100 KD",
        "batch_size": 256,
        "device": {"name": ctx.device, **on_device},
        "cpu": {"threads": ctx.cpu_threads, **on_cpu},
        "speedup_per_batch": round(on_cpu["s_per_batch"] / on_device["s_per_batch"], 2),
    }


# ----------------------------------------------------------------------------- finetune

_GENRES = ("comedy", "drama", "horror", "western", "musical", "noir", "sci-fi", "romance")
_WORDS = ("night", "river", "city", "ghost", "garden", "storm", "letter", "train", "island")


def _teacher_world(n_items: int, n_histories: int) -> tuple[list[str], list[str], list[np.ndarray]]:
    """Item texts in genre clusters; each history is 5 items of one genre, its positives 3
    more of that genre."""
    rng = np.random.default_rng(3)
    genre = np.arange(n_items) % len(_GENRES)
    items = [
        f"The {_WORDS[rng.integers(len(_WORDS))]} of {_WORDS[rng.integers(len(_WORDS))]} "
        f"({1950 + int(rng.integers(70))}) {_GENRES[g]}"
        for g in genre
    ]
    texts, positives = [], []
    for _ in range(n_histories):
        pool = np.flatnonzero(genre == rng.integers(len(_GENRES)))
        picked = rng.choice(pool, min(8, pool.size), replace=False)
        texts.append("; ".join(items[i] for i in picked[:5]))
        positives.append(picked[5:])
    return items, texts, positives


def part_finetune(ctx: Context) -> dict[str, Any]:
    if ctx.minilm is None:
        raise PartSkipped(
            "the MiniLM weights did not travel (no .gpu-payload/call-*/minilm-fp16: run "
            "scripts/gpu-payload.sh and carry the call folder that holds them)"
        )
    import torch

    from trainer.teacher.encoder import Teacher
    from trainer.teacher.lora import LoraConfig, fit_lora

    sz = ctx.sizes
    torch.set_num_threads(ctx.cpu_threads)
    t0 = time.perf_counter()
    teacher = Teacher(ctx.minilm, device=ctx.device, batch_size=128)
    teacher.model.float()  # fp16 weights on disk; training in fp32
    load_s = round(time.perf_counter() - t0, 2)
    items, texts, positives = _teacher_world(sz.teacher_items, sz.teacher_histories)
    t0 = time.perf_counter()
    vecs = teacher.encode(items)
    _sync(ctx.device)
    encode_s = time.perf_counter() - t0
    cfg = LoraConfig(epochs=1, batch_size=32, hard=0, max_examples=len(texts), patience=2)
    t0 = time.perf_counter()
    curve = fit_lora(teacher, texts, positives, vecs, None, config=cfg, progress=False)
    _sync(ctx.device)
    epoch_s = round(time.perf_counter() - t0, 2)
    loss = curve[-1]["loss"]
    if loss is None or not np.isfinite(loss):
        raise RuntimeError(f"fine-tuning loss is {loss!r}")
    return {
        "device": ctx.device,
        "weights": str(ctx.minilm),
        "load_s": load_s,
        "encode_texts_per_s": round(len(items) / encode_s, 1),
        "histories": len(texts),
        "batch_size": cfg.batch_size,
        "lora": {"r": cfg.r, "alpha": cfg.alpha},
        "epoch_s": epoch_s,
        "loss": round(float(loss), 4),
    }


PARTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "tests": part_tests,
    "student": part_student,
    "search": part_search,
    "train": part_train,
    "finetune": part_finetune,
}
"""The parts, in the order they run."""
