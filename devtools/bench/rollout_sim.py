"""``coldstream bench rollout-sim``: the rollout judge's error rates and time to a decision,
by simulation, with a look after every observation (no broker).

Each run is one rollout: a stream of cold observations (and as many warm ones), each from a
user in the canary with probability ``--share``; a hit is a Bernoulli draw at the incumbent's
rate (drawn per run, uniform in [0.15, 0.30] for cold users, 0.05 more for warm users:
MovieLens-like next-event hit rates@10) plus the case's difference for canary users. After
every observation the judge's rule (:func:`trainer.service.judge.rule_codes`, the same
function the judge calls) is applied, until it decides or the sample budget ends the run.

Cases: ``aa`` (identical arms: rolling back is the error), ``boundary`` (worse by exactly the
margin: promoting is the error the test controls), ``bad`` (-0.10 on cold and warm users),
``good`` (+0.03 on cold users). Prints a table (rates with Wilson 95% intervals, the median
observations and the seconds to a decision at ``--rate`` cold events/s, all arms) and writes
``reports/rollout-sim.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trainer.service.judge import RULE_DECISION, RULES, JudgeConfig, rule_codes

__all__ = ["CASES", "add_arguments", "run", "simulate"]

CASES: dict[str, tuple[float, float, str]] = {
    "aa": (0.0, 0.0, "rollback"),
    "boundary": (-1.0, 0.0, "promote"),  # cold delta: -1.0 x margin
    "bad": (-0.10, -0.10, "promote"),
    "good": (0.03, 0.0, "rollback"),
}
"""name -> (cold difference, warm difference, the decision that is an error)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=2000, help="simulated rollouts per case")
    p.add_argument("--share", type=float, default=0.1, help="the canary's share of users")
    p.add_argument(
        "--rate", type=float, default=200.0, help="cold events/s over all arms (for seconds)"
    )
    p.add_argument("--margin", type=float, default=0.02, help="non-inferiority margin")
    p.add_argument("--alpha", type=float, default=0.05, help="level of the confidence sequence")
    p.add_argument(
        "--max-candidate", type=int, default=20_000, help="sample budget: candidate cold obs"
    )
    p.add_argument("--cases", default="aa,boundary,bad,good", help="cases to run, in order")
    p.add_argument("--seed", type=int, default=20, help="random seed")
    p.add_argument("--out", type=Path, default=Path("reports/rollout-sim.json"), help="report")


def simulate(
    delta: float,
    warm_delta: float,
    *,
    n_runs: int,
    cfg: JudgeConfig,
    share: float = 0.1,
    rate: float = 200.0,
    seed: int = 0,
    chunk: int = 1000,
) -> dict[str, np.ndarray]:
    """``n_runs`` rollouts; per run: the rule code that fired (0: none before the horizon),
    the cold observations (all arms) and the candidate's cold observations at the decision."""
    rng = np.random.default_rng(seed)
    p0 = rng.uniform(0.15, 0.30, n_runs)
    w0 = p0 + 0.05
    p1, w1 = np.clip(p0 + delta, 0, 1), np.clip(w0 + warm_delta, 0, 1)
    horizon = int(math.ceil(cfg.max_candidate / share * 1.2)) + chunk
    code = np.zeros(n_runs, dtype=np.int64)
    steps = np.full(n_runs, horizon, dtype=np.int64)
    n_cand = np.zeros(n_runs, dtype=np.int64)
    state = np.zeros((n_runs, 8))  # cold h1 n1 h0 n0, warm h1 n1 h0 n0
    active = np.arange(n_runs)
    done = 0
    while active.size and done < horizon:
        a = active
        r = a.size
        cols = []
        for pc, pi in ((p1[a], p0[a]), (w1[a], w0[a])):
            arm = rng.random((r, chunk)) < share
            hit = rng.random((r, chunk)) < np.where(arm, pc[:, None], pi[:, None])
            cols.append((arm & hit, arm, ~arm & hit, ~arm))
        cum = [
            state[a, i][:, None] + np.cumsum(x, axis=1, dtype=np.float64)
            for i, x in enumerate([*cols[0], *cols[1]])
        ]
        elapsed = (done + np.arange(1, chunk + 1))[None, :] / rate
        codes = rule_codes(tuple(cum[:4]), tuple(cum[4:]), elapsed, cfg)
        fired = codes > 0
        anyf = fired.any(axis=1)
        first = fired.argmax(axis=1)
        hit_rows = np.nonzero(anyf)[0]
        code[a[hit_rows]] = codes[hit_rows, first[hit_rows]]
        steps[a[hit_rows]] = done + first[hit_rows] + 1
        n_cand[a[hit_rows]] = cum[1][hit_rows, first[hit_rows]].astype(np.int64)
        for i in range(8):
            state[a, i] = cum[i][:, -1]
        done += chunk
        active = a[~anyf]
    n_cand[active] = state[active, 1].astype(np.int64)
    return {"code": code, "steps": steps, "n_candidate": n_cand}


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def summarise(sim: dict[str, np.ndarray], error: str, rate: float) -> dict[str, Any]:
    code, n = sim["code"], sim["code"].size
    decisions = np.array(
        [RULE_DECISION[RULES[c]] if c else "give_up" for c in code.tolist()], dtype=object
    )
    out: dict[str, Any] = {"n_runs": int(n)}
    for d in ("promote", "rollback", "give_up"):
        k = int((decisions == d).sum())
        lo, hi = _wilson(k, n)
        out[d] = {"runs": k, "rate": round(k / n, 4), "ci95": [round(lo, 4), round(hi, 4)]}
    out["rules"] = {RULES[c]: int((code == c).sum()) for c in sorted(set(code.tolist())) if c}
    out["error"] = error
    out["error_rate"] = out[error]["rate"]
    out["median_cold_observations"] = int(np.median(sim["steps"]))
    out["median_candidate_observations"] = int(np.median(sim["n_candidate"]))
    out["median_seconds"] = round(float(np.median(sim["steps"])) / rate, 1)
    out["p90_seconds"] = round(float(np.percentile(sim["steps"], 90)) / rate, 1)
    return out


def run(args: argparse.Namespace) -> int:
    cfg = JudgeConfig(margin=args.margin, alpha=args.alpha, max_candidate=args.max_candidate)
    t0, c0 = time.perf_counter(), time.process_time()
    cases: dict[str, Any] = {}
    for i, name in enumerate(c.strip() for c in args.cases.split(",") if c.strip()):
        delta, warm_delta, error = CASES[name]
        if name == "boundary":
            delta = -cfg.margin
        t = time.perf_counter()
        sim = simulate(
            delta,
            warm_delta,
            n_runs=args.runs,
            cfg=cfg,
            share=args.share,
            rate=args.rate,
            seed=args.seed + i,
        )
        cases[name] = {
            "cold_difference": delta,
            "warm_difference": warm_delta,
            **summarise(sim, error, args.rate),
            "wall_s": round(time.perf_counter() - t, 1),
        }
        c = cases[name]
        print(
            f"{name:9s} d={delta:+.3f}  runs={c['n_runs']}  "
            + "  ".join(
                f"{d} {c[d]['rate']:.3f} [{c[d]['ci95'][0]:.3f},{c[d]['ci95'][1]:.3f}]"
                for d in ("promote", "rollback", "give_up")
            )
            + f"  median obs {c['median_cold_observations']} (cand {c['median_candidate_observations']})"
            f"  median {c['median_seconds']} s  error({error}) {c['error_rate']:.3f}",
            flush=True,
        )
    result = {
        "what": "rollout judge by simulation: a look after every observation (cold and warm)",
        "config": asdict(cfg) | {"tau": cfg.scale},
        "share": args.share,
        "cold_events_per_s": args.rate,
        "seconds": "cold observations (all arms) at the decision / cold_events_per_s",
        "hit_rates": "incumbent cold ~ U(0.15, 0.30) per run, warm = cold + 0.05",
        "alpha": args.alpha,
        "errors_at_or_below_alpha": all(c["error_rate"] <= args.alpha for c in cases.values()),
        "cases": cases,
        "seed": args.seed,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "command": "coldstream bench rollout-sim",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['wall_s']} s wall, {result['cpu_s']} s CPU)")
    return 0
