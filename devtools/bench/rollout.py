"""``coldstream bench rollout``: canaries judged on live traffic, end to end, on Apache Kafka
with a worker process and the judge process (``coldstream judge``).

Users here follow a *truth* model: each user's next event is drawn from the truth's top 3
for their history (computed offline from the same checkpoint), so a model's next-event hit
rate@10 is known to be high when it is the truth and low when it is not. Each scenario puts
a candidate beside the live model as a canary to ``--share`` of the users
(``coldstream rollout start``), sends the users' events in rounds and waits for the judge:

``bad``      live = truth; candidate = the truth with its item vectors shuffled (the item
             ids permuted over the same rows): expected ``rollback``
``good``     live = another model; candidate = the truth: expected ``promote``
``neutral``  live = truth; candidate = the same weights: never ``rollback``; ``promote``
             (non-inferior) or ``give_up`` within the time budget, never left hanging
``redistilled``  the trainer's next re-distilled student against the random v1 it started
             from, on real MovieLens users' first events (``devtools/bench/rollout_redistill.py``)
``shadow``   live = truth; candidate = another model as a shadow: no user sees it, the
             worker scores it on the next event (``coldstream_online_hits_total`` under its
             version); then the same model is promoted and scored again on new users of the
             same kind for as many rounds: the two hit rates are compared (a shadow's figure
             should be what the version gets when live)

It writes ``reports/rollout.json``: per scenario the decision, its rule, the events sent and
the seconds until it, the users who were served the candidate (all in its share) and those
served it after the decision (none), the judge's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from coldstream.cli import ExitCode

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=2000, help="simulated users")
    p.add_argument("--items", type=int, default=300, help="catalogue size")
    p.add_argument("--share", type=float, default=0.1, help="the canary's share of users")
    p.add_argument("--rounds", type=int, default=8, help="at most this many events per user")
    p.add_argument(
        "--min-candidate", type=int, default=300, help="the judge's minimum cold sample per arm"
    )
    p.add_argument("--max-seconds", type=float, default=60.0, help="the judge's time budget")
    p.add_argument(
        "--scenarios",
        default="bad,good,neutral,shadow,redistilled",
        help="scenarios to run, in order",
    )
    p.add_argument(
        "--redistill-share",
        type=float,
        default=0.5,
        help="redistilled: the canary's share (MovieLens has few new users)",
    )
    p.add_argument(
        "--redistill-events", type=int, default=6, help="redistilled: events per new user"
    )
    p.add_argument(
        "--redistill-min-sample",
        type=int,
        default=100,
        help="redistilled: the judge's minimum cold sample per arm",
    )
    p.add_argument("--out", type=Path, default=Path("reports/rollout.json"), help="the report")


def _shuffled(store: Path, src: Path, signer: Any, seed: int = 7) -> Path:
    """A copy of ``src`` whose item vectors belong to the wrong items (ids permuted)."""
    from coldstream.core.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(src)
    perm = np.random.default_rng(seed).permutation(len(ck.item_ids))
    return save_checkpoint(
        store,
        model=ck.model,
        item_ids=[ck.item_ids[p] for p in perm],
        item_text_vecs=ck.item_text_vecs,
        item_titles=[ck.item_titles[p] for p in perm],
        metrics={"note": "item vectors shuffled"},
        teacher={"name": "none"},
        signer=signer,
    )


class Users:
    """Users who follow ``truth``: the next event is one of its top 3 for their history."""

    def __init__(
        self, truth: Any, n: int, n_items: int, seed: int = 0, prefix: str = "user-"
    ) -> None:
        self.truth, self.rng, self.n_items = truth, np.random.default_rng(seed), n_items
        self.ids = [f"{prefix}{i}" for i in range(n)]
        self.hist = {u: [str(1 + int(self.rng.integers(n_items)))] for u in self.ids}
        self.round = 0

    def next_round(self) -> list[tuple[str, str]]:
        if self.round:
            rows = [[[i, 0, 0.0] for i in self.hist[u]] for u in self.ids]
            tops = self.truth.recommend_batch(rows, 3)
            for u, top in zip(self.ids, tops, strict=True):
                self.hist[u].append(top[int(self.rng.integers(len(top)))][0])
        self.round += 1
        return [(u, self.hist[u][-1]) for u in self.ids]


def _metric(text: str, name: str, labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def scenario(name: str, args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    from coldstream.core.rollout import assign
    from coldstream.core.topics import create_topics, topic_names
    from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
    from devtools.kafka_io import new_event, produce, read_until
    from devtools.processes import WorkerProcess, start_process, stop_process
    from devtools.waiting import wait_until
    from stream_app.recommender import Recommender

    root = work / name
    store = root / "store"
    prefix = f"bench-rollout-{name}-{int(time.time())}-"
    asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
    topics = topic_names(prefix)
    signer = dev_signer()
    priv, pub = signer.write(root / "keys")
    opts = {"n_items": args.items, "dim": 32, "text_dim": 32, "clusters": 12}
    truth_path = make_checkpoint(store, seed=1, signer=signer, point=False, **opts)  # v1
    other = make_checkpoint(store, seed=2, signer=signer, point=False, **opts)  # v2
    arm = "shadow" if name == "shadow" else "canary"
    if name == "bad":
        live, cand = truth_path, _shuffled(store, truth_path, signer)
    elif name == "good":
        live, cand = other, truth_path
    elif name == "neutral":
        live = truth_path
        from coldstream.core.checkpoint import load_checkpoint, save_checkpoint

        ck = load_checkpoint(truth_path)
        cand = save_checkpoint(
            store, model=ck.model, item_ids=ck.item_ids, item_text_vecs=ck.item_text_vecs,
            item_titles=ck.item_titles, metrics={"note": "same weights"}, teacher={"name": "none"},
            signer=signer,
        )  # fmt: skip
    else:
        live, cand = truth_path, other
    live_v, cand_v = int(live.name[1:]), int(cand.name[1:])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")},
        "COLDSTREAM_BOOTSTRAP": bootstrap,
        "COLDSTREAM_TOPIC_PREFIX": prefix,
        "COLDSTREAM_MODEL_STORE": str(store),
        "COLDSTREAM_TRAINER_SIGNING_KEY_FILE": str(priv),
        "COLDSTREAM_TRAINER_PROGRESS": "false",
        **verify_env(signer),
    }
    cli = [sys.executable, "-m", "coldstream"]
    import subprocess

    def run_cli(*argv: str) -> str:
        res = subprocess.run(
            [*cli, *argv], env=env, cwd=root, capture_output=True, text=True, timeout=120
        )
        if res.returncode:
            raise RuntimeError(f"coldstream {' '.join(argv)}: {res.stderr[-2000:]}")
        return res.stdout

    run_cli("promote", str(live_v), "--no-publish")
    truth = Recommender.from_checkpoint(truth_path, prefer_gpu_index=False)
    users = Users(truth, args.users, args.items)
    out: dict[str, Any] = {"live_version": live_v, "candidate_version": cand_v, "arm": arm}
    with WorkerProcess(
        log_path=root / "worker.log", bootstrap=bootstrap, topic_prefix=prefix,
        app_id=prefix + "app", model_store=store, log_level="warning", env=env,
    ) as worker:  # fmt: skip
        started = run_cli("rollout", "start", str(cand_v), "--arm", arm, "--share", str(args.share))
        rid = started.split()[1].rstrip(":")
        in_share = {u for u in users.ids if arm == "canary" and assign(u, args.share, rid)}
        wait_until(
            lambda: (
                _metric(
                    worker.get_text("/metrics"),
                    "coldstream_rollout_candidate_version",
                    f'arm="{arm}"',
                )
                == float(cand_v)
            ),
            timeout_s=60,
            what="the worker to hold the candidate",
        )
        judge = None
        if arm == "canary":
            judge = start_process(
                [*cli, "judge", "--min-candidate", str(args.min_candidate), "--guard-min",
                 str(max(args.min_candidate // 4, 30)), "--max-seconds", str(args.max_seconds),
                 "--metrics-port", "0"],
                log_path=root / "judge.log", env=env, cwd=root,
            )  # fmt: skip
        t0, sent, decided_at, sent_at_decision = time.time(), 0, None, None
        try:
            for _ in range(args.rounds):
                batch = [
                    (topics["clicks"], u.encode(), new_event(u, item)[1])
                    for u, item in users.next_round()
                ]
                asyncio.run(produce(bootstrap, batch, acks="all"))
                sent += len(batch)
                deadline = time.time() + 2.5
                while time.time() < deadline:
                    if arm == "canary" and not (store / "ROLLOUT.json").exists():
                        break
                    time.sleep(0.2)
                if arm == "canary" and not (store / "ROLLOUT.json").exists():
                    decided_at, sent_at_decision = time.time(), sent
                    break
            if arm == "canary" and decided_at is None:
                wait_until(
                    lambda: not (store / "ROLLOUT.json").exists(),
                    timeout_s=args.max_seconds + 30,
                    what="the judge's decision",
                )
                decided_at, sent_at_decision = time.time(), sent
            if arm == "shadow":
                text = worker.get_text("/metrics")
                hits = {
                    v: (
                        _metric(text, "coldstream_online_hits_total", f'model_version="{v}"') or 0,
                        _metric(text, "coldstream_online_requests_total", f'model_version="{v}"')
                        or 0,
                    )
                    for v in (str(live_v), str(cand_v))
                }
                out["shadow"] = _shadow_then_live(
                    hits, run_cli, users, worker, bootstrap, topics, args, cand_v
                )
            else:
                wait_until(
                    lambda: (
                        _metric(
                            worker.get_text("/metrics"),
                            "coldstream_rollout_candidate_version",
                            'arm="canary"',
                        )
                        == 0.0
                    ),
                    timeout_s=30,
                    what="the worker to drop or promote the candidate",
                )
                after = time.time()
                final = [
                    (topics["clicks"], u.encode(), new_event(u, item)[1])
                    for u, item in users.next_round()
                ]
                asyncio.run(produce(bootstrap, final, acks="all"))
        finally:
            if judge is not None:
                stop_process(judge)
        recs = asyncio.run(
            read_until(bootstrap, [topics["recommendations"]], idle_s=2.0, to_end=True)
        )
    vals = [(r.timestamp / 1000.0, json.loads(r.value)) for r in recs]
    saw = {v["user_id"] for _, v in vals if v["arm"] == "canary"}
    out.update(
        users=args.users,
        share=args.share,
        users_in_share=len(in_share),
        users_served_candidate=len(saw),
        served_outside_share=len(saw - in_share),
        recommendations=len(vals),
    )
    if arm == "canary":
        assert decided_at is not None
        report = json.loads(
            next((root / "reports" / "rollout-decisions").glob("*.json")).read_text()
        )
        late = [v for ts, v in vals if ts > after]
        out.update(
            decision=report["decision"],
            rule=report["rule"],
            seconds_to_decision=round(decided_at - t0, 1),
            events_sent_before_decision=sent_at_decision,
            served_candidate_after_decision=sum(
                1 for v in late if v["model_version"] == str(cand_v) and v["arm"] == "canary"
            ),
            after_decision_served_by=sorted({v["model_version"] for v in late}),
            figures={k: report["figures"][k] for k in ("cold", "warm", "elapsed_s")},
        )
    return out


def _shadow_then_live(hits, run_cli, users, worker, bootstrap, topics, args, cand_v) -> dict:
    """The shadow's online hit rate, then the same version made live and scored again."""
    from devtools.kafka_io import new_event, produce
    from devtools.waiting import wait_until

    def rate(h: tuple[float, float]) -> dict[str, float]:
        n = max(h[1], 1.0)
        p = h[0] / n
        half = 1.96 * (p * (1 - p) / n) ** 0.5
        return {
            "hit_rate": round(p, 4),
            "n": int(h[1]),
            "ci95": [round(p - half, 4), round(p + half, 4)],
        }

    shadow = rate(hits[str(cand_v)])
    live_before = rate(hits[next(v for v in hits if v != str(cand_v))])
    run_cli("rollout", "promote")
    wait_until(
        lambda: json.loads(worker.get_text("/ready"))["model_version"] == str(cand_v),
        timeout_s=60,
        what="the shadow to be promoted",
    )

    def counts() -> tuple[float, float]:
        text = worker.get_text("/metrics")
        return (
            _metric(text, "coldstream_online_hits_total", f'model_version="{cand_v}"') or 0.0,
            _metric(text, "coldstream_online_requests_total", f'model_version="{cand_v}"') or 0.0,
        )

    base = counts()
    # the same traffic again: new users of the same kind, as many rounds as the shadow saw
    fresh = Users(users.truth, len(users.ids), users.n_items, seed=1, prefix="later-user-")
    for _ in range(users.round):
        batch = [(topics["clicks"], u.encode(), new_event(u, i)[1]) for u, i in fresh.next_round()]
        asyncio.run(produce(bootstrap, batch, acks="all"))
        time.sleep(2.0)
    wait_until(lambda: counts()[1] - base[1] >= shadow["n"] * 0.95, timeout_s=30, what="scoring")
    now = counts()
    live = rate((now[0] - base[0], now[1] - base[1]))
    return {
        "shadow": shadow,
        "same_version_live": live,
        "incumbent_while_shadowed": live_before,
        "difference": round(live["hit_rate"] - shadow["hit_rate"], 4),
    }


def run(args: argparse.Namespace) -> int:
    from devtools.brokers import kafka_bootstrap_for

    t0 = time.time()
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU",
        "broker": "Apache Kafka (single-node KRaft)",
        "share": args.share,
        "users": args.users,
        "items": args.items,
        "judge": {"min_candidate": args.min_candidate, "max_seconds": args.max_seconds},
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as d:
        work = Path(d)
        with kafka_bootstrap_for(work) as bootstrap:
            for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
                print(f"[rollout] {name} ...", flush=True)
                if name == "redistilled":
                    from devtools.bench.rollout_redistill import scenario as redistilled

                    got = redistilled(args, bootstrap, work)
                else:
                    got = scenario(name, args, bootstrap, work)
                report["scenarios"][name] = got
                print(
                    f"[rollout] {name}: {json.dumps({k: v for k, v in got.items() if k != 'figures'})}",
                    flush=True,
                )
    report["seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return ExitCode.OK
