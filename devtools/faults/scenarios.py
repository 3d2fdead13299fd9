"""The fault scenarios, and the registry that names them.

Each scenario is a function of a :class:`~devtools.faults.harness.Harness` (and, for the
broker restarts, the private broker it restarts) that breaks something while events flow
and returns a :class:`~devtools.faults.accounting.FaultResult`. The fault suite
(``tests/fault``) calls them directly on small streams; ``coldstream bench faults`` runs
them by name through :func:`run_scenario` on larger streams.

``@scenario(name, broker=..., scaled=...)`` registers a function in :data:`REGISTRY`
(registration order is the default order of ``--scenarios``): ``broker`` says what it runs
on (``"shared"``: the benchmark's Apache Kafka; ``"kafka"``/``"tansu"``: a private broker
of that kind, passed as its second argument; ``"none"``: no broker, a work folder instead
of a harness) and ``scaled(scale)`` gives its benchmark-size keyword arguments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coldstream.core.records import event_payload
from devtools.checkpoints import make_checkpoint
from devtools.faults.accounting import (
    FaultResult,
    account,
    first_output_after,
    order_violations,
    session_mismatches,
)
from devtools.faults.harness import Harness
from devtools.faults.inputs import (
    N_ITEMS,
    Input,
    bad_events,
    expected_rejections,
    good_events,
    interleave,
)
from devtools.kafka_io import committed_offsets, create_compacted_topic, run_coro
from devtools.processes import rss_mb
from devtools.waiting import wait_until

__all__ = [
    "COMMIT_INTERVAL_S",
    "REGISTRY",
    "Scenario",
    "UnknownScenario",
    "get_scenario",
    "run_scenario",
    "scaled_count",
    "scenario",
]

COMMIT_INTERVAL_S = 2.8
"""Faust's default ``broker_commit_interval``: the uncommitted window is at most this long."""

BrokerKind = Literal["shared", "kafka", "tansu", "none"]


@dataclass(frozen=True)
class Scenario:
    name: str
    func: Callable[..., FaultResult]
    broker: BrokerKind
    scaled: Callable[[float], dict[str, Any]]
    """Benchmark-size keyword arguments of ``func`` at a scale (1.0: the fault suite's size)."""


REGISTRY: dict[str, Scenario] = {}
"""Scenario name -> :class:`Scenario`, in registration order."""


class UnknownScenario(KeyError):
    """A scenario name that is not in :data:`REGISTRY`."""

    def __str__(self) -> str:
        return str(self.args[0])


def scenario(
    name: str,
    *,
    broker: BrokerKind = "shared",
    scaled: Callable[[float], dict[str, Any]] = lambda scale: {},
) -> Callable[[Callable[..., FaultResult]], Callable[..., FaultResult]]:
    """Register the decorated function in :data:`REGISTRY` under ``name``."""

    def add(func: Callable[..., FaultResult]) -> Callable[..., FaultResult]:
        if name in REGISTRY:
            raise ValueError(f"scenario {name!r} registered twice")
        REGISTRY[name] = Scenario(name, func, broker, scaled)
        return func

    return add


def scaled_count(n: int, scale: float) -> int:
    """``n`` events at ``scale``, at least 50."""
    return max(50, int(n * scale))


def get_scenario(name: str) -> Scenario:
    """The registered scenario ``name``; :class:`UnknownScenario` names the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(REGISTRY)}") from None


def run_scenario(name: str, *, scale: float, workdir: Path, shared: dict[str, Any]) -> FaultResult:
    """One scenario on fresh topics (Apache Kafka; a private broker for broker restarts).

    ``shared["bootstrap"]``: a given broker; otherwise ``shared["kafka"]`` is started on
    first use and left running for the next scenario (the caller stops it)."""
    from coldstream.core.topics import create_topics, load_topics, prefixed
    from devtools.brokers import KafkaBroker, TansuBroker

    sc = get_scenario(name)
    if sc.broker == "none":
        return sc.func(workdir / name, **sc.scaled(scale))
    prefix = f"faults-{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}-"
    private: KafkaBroker | TansuBroker | None = None
    if sc.broker == "kafka":
        private = KafkaBroker(workdir / name / "kafka").start()
        bootstrap = private.bootstrap
    elif sc.broker == "tansu":
        private = TansuBroker().start()
        bootstrap = private.bootstrap
    elif shared.get("bootstrap"):
        bootstrap = shared["bootstrap"]
    else:
        if "kafka" not in shared:
            shared["kafka"] = KafkaBroker(workdir / "kafka").start()
        bootstrap = shared["kafka"].bootstrap
    try:
        specs = load_topics()
        topics = {k: s.name for k, s in prefixed(specs, prefix).items()}
        run_coro(create_topics(bootstrap, specs, replication_factor=1, prefix=prefix), 120)
        h = Harness(bootstrap=bootstrap, prefix=prefix, topics=topics, workdir=workdir / name)
        try:
            args = (h,) if private is None else (h, private)
            return sc.func(*args, **sc.scaled(scale))
        finally:
            h.close()
    finally:
        if private is not None:
            private.close()


# ------------------------------------------------------------------------------ scenarios
# (defined in the default order of ``coldstream bench faults --scenarios``)


@scenario("kill9", scaled=lambda s: {"n_events": scaled_count(1500, s), "rate": 300.0 * min(s, 3)})
def kill9(
    h: Harness,
    *,
    n_events: int = 1500,
    n_users: int = 40,
    rate: float = 300.0,
    kill_at: float = 0.4,
) -> FaultResult:
    """SIGKILL the only worker mid-stream, start a new one. Recovery: kill -> first output
    of the new worker. Duplicates are bounded by the uncommitted window. Users get fewer
    events than ``max_history`` (more users if needed), so their sessions compare exactly."""
    n_users = max(n_users, n_events // 25 + 1)
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "k9")
    h.start_worker("a")
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= kill_at * n_events, 120, "the stream to be under way")
    t_kill = time.time()
    assert w.proc is not None
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait(10)
    w.proc = None
    sent_at_kill = feeder.sent
    h.start_worker("b")
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=120)
    users = {
        inp.user for inp in inputs[max(0, sent_at_kill - int(rate * 5)) : sent_at_kill] if inp.user
    }
    bound = int(rate * (COMMIT_INTERVAL_S + 1.0)) + 512
    return account(
        "worker kill -9 + restart",
        inputs,
        out,
        first_output_after(out, t_kill),
        duplicate_bound=bound,
        affected_users=len(users),
        session_mismatches=session_mismatches(
            h.sessions(), inputs, users, examples=h.mismatch_examples
        ),
        mismatch_examples=h.mismatch_examples[:3],
        order_violations=order_violations(inputs, out),
    )


@scenario(
    "sigterm", scaled=lambda s: {"n_events": scaled_count(1500, s), "rate": 300.0 * min(s, 3)}
)
def sigterm(
    h: Harness,
    *,
    n_events: int = 1500,
    n_users: int = 40,
    rate: float = 300.0,
    stop_at: float = 0.4,
    drain_budget_s: float = 30.0,
) -> FaultResult:
    """SIGTERM the only worker mid-stream (a rolling deploy), start a new one. Recovery:
    old worker's exit -> first output of the new one. Drain: SIGTERM -> exit (``details``)."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "st")
    h.start_worker("a")
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= stop_at * n_events, 120, "the stream to be under way")
    assert w.proc is not None
    proc = w.proc
    t_term = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(drain_budget_s + 10)
    except subprocess.TimeoutExpired:
        rc = None
    drain_s = time.time() - t_term
    w.stop(deadline_s=5)
    h.start_worker("b")
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=120)
    log_tail = (h.workdir / "worker-a.log").read_text(errors="replace")[-2000:]
    return account(
        "graceful stop (SIGTERM) + restart",
        inputs,
        out,
        first_output_after(out, t_term + drain_s),
        exit_code=rc,
        drain_seconds=round(drain_s, 2),
        drain_budget_s=drain_budget_s,
        order_violations=order_violations(inputs, out),
        log_tail=log_tail if rc != 0 else "",
    )


@scenario("rebalance", scaled=lambda s: {"n_events": scaled_count(3000, s)})
def rebalance(
    h: Harness,
    *,
    n_events: int = 3000,
    n_users: int = 60,
    rate: float = 200.0,
    tail_events: int = 300,
) -> FaultResult:
    """A second and a third worker join, then the first leaves (SIGTERM), while events flow
    (the stream goes on until ``tail_events`` after the leave; ``n_events`` caps it).
    Recovery: the longest pause between consecutive outputs during the changes."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "rb")
    a = h.start_worker("a")
    feeder = h.feeder(inputs, rate)
    feeder.start()
    t0 = time.time()
    wait_until(lambda: feeder.sent >= 3 * rate, 120, "the stream to be under way")
    h.start_workers("b", "c")
    joined_at = feeder.sent
    wait_until(
        lambda: feeder.sent >= joined_at + 3 * rate or not feeder.is_alive(), 300, "more events"
    )
    left_at = feeder.sent
    rc_a = a.stop(deadline_s=30)
    feeder.limit = min(feeder.limit, feeder.sent + tail_events)
    feeder.join_checked(300)
    inputs = inputs[: feeder.sent]
    t1 = time.time()
    out = h.collect(inputs, timeout_s=180)
    alive = [
        w.proc is not None and w.proc.poll() is None for w in h.workers if w is not a and w.ready_s
    ]
    times = [p for p in out.produced_at if t0 <= p <= max(t1, max(out.produced_at, default=t1))]
    gap = max((b - a_ for a_, b in zip(times, times[1:], strict=False)), default=None)
    return account(
        "rebalance: +2 workers, -1 worker under load",
        inputs,
        out,
        gap,
        order_violations=order_violations(inputs, out),
        leaver_exit_code=rc_a,
        sent_when_joined=joined_at,
        sent_when_left=left_at,
        others_alive=all(alive),
    )


@scenario("broker_restart", broker="kafka", scaled=lambda s: {"n_events": scaled_count(1500, s)})
def broker_restart(
    h: Harness,
    broker: Any,
    *,
    n_events: int = 1500,
    n_users: int = 40,
    rate: float = 200.0,
    down_s: float = 5.0,
) -> FaultResult:
    """Apache Kafka (persistent log dir) killed mid-stream and restarted on the same ports.
    Recovery: broker back -> first output after it."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "br")
    h.start_worker("a")
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= 0.3 * n_events, 120, "the stream to be under way")
    t_down = time.time()
    broker.kill()
    time.sleep(down_s)
    broker.start()
    t_up = time.time()
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=180)
    assert w.proc is not None
    alive = w.proc.poll() is None
    restarts = (h.workdir / "worker-a.log").read_text(errors="replace").count("serving model")
    return account(
        "Kafka broker kill + restart (persistent log)",
        inputs,
        out,
        first_output_after(out, t_up),
        worker_alive=alive,
        worker_starts=restarts,
        broker_down_seconds=round(t_up - t_down, 2),
        order_violations=order_violations(inputs, out),
    )


@scenario("tansu_restart", broker="tansu", scaled=lambda s: {"n_events": scaled_count(400, s)})
def tansu_restart(
    h: Harness, broker: Any, *, n_events: int = 400, down_s: float = 2.0
) -> FaultResult:
    """The embedded Tansu broker (memory storage) restarted under a running worker: the
    worker must not crash-loop. Tansu loses every topic and offset on restart, so events
    produced before it are gone by design (``details.lost_with_broker``); events produced
    after the topics are recreated must be answered. Recovery: broker back -> first answer."""
    from coldstream.core.topics import create_topics, load_topics

    before = good_events(n_events // 2, n_users=20, tag=h.prefix + "tb")
    after = good_events(n_events - len(before), n_users=20, tag=h.prefix + "ta", seed=5)
    h.start_worker("a", session_timeout_s=2.0)
    w = h.workers[-1]
    h.produce(before)
    h.collect(before, timeout_s=60, idle_s=0.2)
    port = int(h.bootstrap.rsplit(":", 1)[1])
    broker.stop()
    time.sleep(down_s)
    broker.port = port
    broker.start()
    t_up = time.time()
    # what an operator does after a Tansu restart: create the topics again, the worker's
    # table changelog included (Faust created it at start-up; Tansu forgot it)
    run_coro(create_topics(h.bootstrap, load_topics(), replication_factor=1, prefix=h.prefix), 120)
    run_coro(
        create_compacted_topic(
            h.bootstrap, f"{h.app_id}-sessions-changelog", load_topics()["clicks"].partitions
        ),
        60,
    )
    h.produce(after)
    out = h.collect(after, timeout_s=120)
    assert w.proc is not None
    alive = w.proc.poll() is None
    starts = (h.workdir / "worker-a.log").read_text(errors="replace").count("serving model")
    return account(
        "Tansu broker restart (memory storage)",
        after,
        out,
        first_output_after(out, t_up),
        worker_alive=alive,
        worker_starts=starts,
        lost_with_broker=len(before),
    )


@scenario(
    "bad_input", scaled=lambda s: {"n_bad": scaled_count(300, s), "n_good": scaled_count(400, s)}
)
def bad_input(h: Harness, *, n_bad: int = 300, n_good: int = 400, seed: int = 1) -> FaultResult:
    """Hostile payloads mixed with good events through a real worker (below the breaker's
    ratio): no crash, one output per input, every bad one in the DLQ with a reason."""
    from coldstream.core.events import REASONS

    good = good_events(n_good, n_users=30, tag=h.prefix + "bi")
    bad = bad_events(n_bad, seed=seed)
    inputs = interleave(good, bad, seed)
    h.start_worker("a")
    w = h.workers[-1]
    h.produce(inputs)
    out = h.collect(inputs, timeout_s=120)
    reasons: dict[str, int] = defaultdict(int)
    for d in out.dlq_values:
        reasons[d["error"]] += 1
    assert w.proc is not None
    want = expected_rejections(inputs)
    got = {(d["source_topic"], d["partition"], d["offset"]): d["error"] for d in out.dlq_values}
    wrong = sum(1 for i, reason in want.items() if got.get(inputs[i].pos) != reason)
    return account(
        "bad input through a worker",
        inputs,
        out,
        None,
        worker_alive=w.proc.poll() is None,
        n_bad=n_bad,
        n_rejected=len(want),
        rejected_not_in_dlq_with_reason=wrong,
        dlq_not_expected=len(got) - (len(want) - wrong),
        unknown_reasons=sorted(set(reasons) - set(REASONS)),
        reasons=dict(reasons),
    )


@scenario("dlq_breaker", scaled=lambda s: {"n_events": scaled_count(1000, s)})
def dlq_breaker(h: Harness, *, n_events: int = 1000, bad_share: float = 0.9) -> FaultResult:
    """Mostly bad input: the breaker stops the worker with a clear message and a non-zero
    exit. Lost counts only *consumed* inputs without an output; unread ones stay in the
    topic (``details.unread``). Recovery: start -> exit."""
    n_bad = int(n_events * bad_share)
    inputs = interleave(
        good_events(n_events - n_bad, n_users=20, tag=h.prefix + "db"), bad_events(n_bad, seed=3), 4
    )
    h.produce(inputs)
    t0 = time.time()
    proc = h.spawn_worker(
        "a", env={"COLDSTREAM_DLQ_MIN_EVENTS": "100", "COLDSTREAM_DLQ_WINDOW": "200"}, batch_size=50
    )
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        rc = None
    exit_s = time.time() - t0
    log_text = (h.workdir / "worker-a.log").read_text(errors="replace")
    out = h.collect(inputs, timeout_s=5, idle_s=0.5)
    committed = run_coro(
        committed_offsets(h.bootstrap, h.app_id, [h.topics["clicks"], h.topics["purchases"]]), 60
    )
    consumed = [
        i
        for i, inp in enumerate(inputs)
        if inp.pos and committed.get((h.topics[inp.pos[0]], inp.pos[1]), 0) > inp.pos[2]
    ]
    lost = sum(1 for i in consumed if out.counts.get(i, 0) == 0)
    res = account(
        "DLQ circuit breaker (90% bad input)",
        inputs,
        out,
        exit_s,
        exit_code=rc,
        message="DLQ circuit breaker tripped" in log_text,
        committed_inputs=len(consumed),
        unread=len(inputs) - len(out.counts),
    )
    res.lost = lost
    return res


@scenario("burst", scaled=lambda s: {"steady_rate": 50.0, "burst_s": 2.0 * min(s, 5)})
def burst(
    h: Harness,
    *,
    steady_rate: float = 20.0,
    steady_s: float = 4.0,
    burst_factor: int = 100,
    burst_s: float = 2.0,
    n_users: int = 500,
) -> FaultResult:
    """Steady rate, then ``burst_factor`` x that rate for ``burst_s``, then steady again. RSS of
    the worker sampled every 0.2 s. Recovery: burst end -> every input answered (lag drained)."""
    n1 = int(steady_rate * steady_s)
    n2 = int(steady_rate * burst_factor * burst_s)
    n3 = n1
    inputs = good_events(n1 + n2 + n3, n_users=n_users, tag=h.prefix + "bu")

    def rate(i: int) -> float:
        return steady_rate * burst_factor if n1 <= i < n1 + n2 else steady_rate

    h.start_worker("a")
    w = h.workers[-1]
    assert w.proc is not None
    pid = w.proc.pid
    rss: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            r = rss_mb(pid)
            if r is not None:
                rss.append(r)
            stop.wait(0.2)

    rss_before = rss_mb(pid) or 0.0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    feeder = h.feeder(inputs, rate)
    feeder.start()
    try:
        wait_until(lambda: feeder.sent >= n1 + n2, 300, "the burst to be sent")
        t_burst_end = time.time()
        feeder.join_checked(300)
        out = h.collect(inputs, timeout_s=180, idle_s=0.5)
    finally:
        stop.set()
        sampler.join(2)
    burst_ids = {inp.event_id for inp in inputs[n1 : n1 + n2]}
    last_burst_answer = max(
        (v["produced_at"] for vs in out.by_user.values() for v in vs if v["event_id"] in burst_ids),
        default=None,
    )
    drained = (last_burst_answer - t_burst_end) if last_burst_answer else None
    return account(
        f"burst {burst_factor}x steady rate",
        inputs,
        out,
        max(0.0, drained) if drained is not None else None,
        steady_rate=steady_rate,
        burst_rate=steady_rate * burst_factor,
        burst_events=n2,
        rss_before_mb=round(rss_before, 1),
        rss_peak_mb=round(max(rss, default=0.0), 1),
        rss_after_mb=round(rss[-1] if rss else 0.0, 1),
    )


@scenario("forget", scaled=lambda s: {"n_users": scaled_count(5, s) // 10 or 5})
def forget(h: Harness, *, n_users: int = 5, before: int = 4, after: int = 2) -> FaultResult:
    """Each user: ``before`` events, a forget request, ``after`` events. Checks: one ack per
    request (no items, ``fallback: forgotten``), the table tombstoned then rebuilt from the
    later events only, no recommended item from before the request is excluded-as-seen."""
    now = time.time()
    inputs: list[Input] = []
    for u in range(n_users):
        user = f"{h.prefix}fg-u{u}"
        for j in range(before + 1 + after):
            eid = f"{h.prefix}fg-{u}-{j}"
            value = (
                forget_request(user, event_id=eid, ts=now)
                if j == before
                else event_payload(user, str(1 + (u * 7 + j) % N_ITEMS), event_id=eid, ts=now)
            )
            inputs.append(Input("clicks", user.encode(), value, eid, user))
    h.start_worker("a")
    w = h.workers[-1]
    h.produce(inputs)
    out = h.collect(inputs, timeout_s=60)
    sessions = h.sessions()
    problems = []
    for u in range(n_users):
        user = f"{h.prefix}fg-u{u}"
        vals = out.by_user.get(user, [])
        ack = [v for v in vals if v["event_id"] == f"{h.prefix}fg-{u}-{before}"]
        if len(ack) != 1 or ack[0]["items"] or ack[0]["fallback"] != "forgotten":
            problems.append(f"{user}: ack {ack}")
        first_after = [v for v in vals if v["event_id"] == f"{h.prefix}fg-{u}-{before + 1}"]
        if not first_after or first_after[0]["cold_start"] is not True:
            problems.append(f"{user}: first event after forget not cold start")
        kept = sessions.get(user) or []
        want = [f"{h.prefix}fg-{u}-{j}" for j in range(before + 1, before + 1 + after)]
        if [e[3] for e in kept] != want:
            problems.append(f"{user}: session {kept}")
        status, body = w.get_json(f"/recommend/{user}")
        if status != 200 or body.get("history_length") != after:
            problems.append(f"{user}: /recommend says {status} {body}")
    # a user forgotten with nothing after it: gone from the table (tombstone)
    lone = f"{h.prefix}fg-lone"
    extra = [
        Input(
            "clicks",
            lone.encode(),
            event_payload(lone, "5", event_id=lone + "-1", ts=now),
            lone + "-1",
            lone,
        ),
        Input(
            "clicks",
            lone.encode(),
            forget_request(lone, event_id=lone + "-2", ts=now),
            lone + "-2",
            lone,
        ),
    ]
    h.produce(extra)
    out2 = h.collect(inputs + extra, timeout_s=60)
    sessions = h.sessions()
    if lone not in sessions or sessions[lone] is not None:
        problems.append(f"{lone}: no tombstone ({sessions.get(lone, 'absent')})")
    return account("forget a user (privacy)", inputs + extra, out2, None, problems=problems)


def forget_request(user_id: str, *, event_id: str, ts: float) -> bytes:
    """A forget request: ``event_type: forget`` and no ``item_id`` (``docs/privacy.md``).
    Not built by ``event_payload``, whose ``item_id`` is required."""
    return json.dumps(
        {"event_id": event_id, "user_id": user_id, "event_type": "forget", "ts": ts},
        separators=(",", ":"),
    ).encode()


@scenario("hostile_checkpoint", broker="none")
def hostile_checkpoint(workdir: Path) -> FaultResult:
    """Load three hostile checkpoints in a fresh subprocess each; the peak RSS growth of the
    load must stay small: refused before any large allocation. Recovery: slowest refusal."""
    from coldstream.core import checkpoint as st

    workdir = Path(workdir)
    rows = []
    for attack in ("oversize_file", "absurd_config", "path_escape"):
        root = workdir / attack
        path = make_checkpoint(root, n_items=50, dim=8, text_dim=8)
        _make_hostile(path, attack)
        code = (
            "import resource,time,sys,json\n"
            "from coldstream.core.checkpoint import load_checkpoint, CheckpointError\n"
            "import torch, numpy\n"
            "r0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "t=time.perf_counter()\n"
            "try:\n"
            f"    load_checkpoint({str(path)!r}); res='loaded'\n"
            "except CheckpointError as e:\n"
            "    res=e.reason\n"
            "r1=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(json.dumps({'result':res,'grew_mb':(r1-r0)/1024,'s':time.perf_counter()-t}))\n"
        )
        p = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=str(Path(st.__file__).resolve().parents[2]),
        )
        if p.returncode != 0:
            rows.append(
                {
                    "attack": attack,
                    "result": f"crashed rc={p.returncode}",
                    "stderr": p.stderr[-500:],
                }
            )
            continue
        rows.append({"attack": attack, **json.loads(p.stdout.strip().splitlines()[-1])})
    refused = sum(
        1
        for r in rows
        if r.get("result") not in ("loaded",) and "crash" not in str(r.get("result"))
    )
    return FaultResult(
        "hostile checkpoints (model store)",
        len(rows),
        0,
        refused,
        len(rows) - refused,
        0,
        max((r.get("s", 0.0) for r in rows), default=None),
        {
            "attacks": rows,
            "max_rss_growth_mb": round(max((r.get("grew_mb", 0.0) for r in rows), default=0.0), 1),
        },
    )


def _make_hostile(path: Path, attack: str) -> None:
    import hashlib

    man = json.loads((path / "manifest.json").read_text())

    def rewrite(name: str, raw: bytes) -> None:
        (path / name).write_bytes(raw)
        man["files"][name] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}

    if attack == "oversize_file":  # a sparse 5 GiB file announced honestly in the manifest
        with open(path / "items.safetensors", "r+b") as f:
            f.truncate(5 * 1024**3)
        man["files"]["items.safetensors"]["bytes"] = 5 * 1024**3
    elif attack == "absurd_config":  # within every per-field limit, ~1.9e9 parameters (~7 GB)
        cfg = json.loads((path / "config.json").read_text())
        cfg["student"].update(n_items=50, text_dim=8192, dim=4096, max_len=4096, n_layers=16)
        rewrite("config.json", json.dumps(cfg).encode())
    elif attack == "path_escape":
        man["files"]["../../../etc/passwd"] = {"bytes": 1, "sha256": "0" * 64}
    (path / "manifest.json").write_text(json.dumps(man))
