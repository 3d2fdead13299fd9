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

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from coldstream.core.records import event_payload
from devtools.checkpoints import make_checkpoint
from devtools.faults.accounting import (
    FaultResult,
    Outputs,
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
from devtools.kafka_io import (
    alter_topic_configs,
    committed_offsets,
    create_compacted_topic,
    run_coro,
)
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
"""Faust's default ``broker_commit_interval`` (the worker also commits after every batch)."""
BATCH_SIZE = 512
"""The worker's default ``batch_size``: after a crash at most one batch is answered twice."""

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
        h = Harness(
            bootstrap=bootstrap,
            prefix=prefix,
            topics=topics,
            workdir=workdir / name,
            worker_env=shared.get("worker_env"),
        )
        try:
            args = (h,) if private is None else (h, private)
            return sc.func(*args, **sc.scaled(scale))
        finally:
            h.close()
    finally:
        if private is not None:
            private.close()


def pct(xs: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``xs`` to 0.1 (``None`` for no values)."""
    import numpy as np

    return round(float(np.percentile(xs, q)), 1) if xs else None


def _committed_outputs(h: Harness, inputs: list[Input]) -> Any:
    """What a ``read_committed`` reader sees of ``inputs``' answers
    (:func:`devtools.faults.committed.read_committed_outputs`)."""
    from devtools.faults.committed import read_committed_outputs

    return run_coro(
        read_committed_outputs(
            h.bootstrap,
            h.topics,
            [inp.event_id for inp in inputs],
            [inp.pos for inp in inputs],
            timeout_s=180,
        ),
        240,
    )


def _eos_counted(h: Harness, result: FaultResult, inputs: list[Input], *, sessions: bool) -> None:
    """Under ``exactly_once`` the ``read_committed`` checker's view is the one that counts:
    ``result.lost`` / ``result.duplicated`` become the committed outputs' figures, the
    read_uncommitted ones stay in ``details``; with ``sessions``, every user's committed
    session must equal the replay of that user's inputs (``details.session_mismatches``)."""
    from devtools.faults.committed import read_committed_changelog

    committed = _committed_outputs(h, inputs)
    result.details["committed"] = committed.row()
    result.details["read_uncommitted"] = {"lost": result.lost, "duplicated": result.duplicated}
    result.lost, result.duplicated = committed.lost, committed.duplicated
    if sessions:
        changelog = run_coro(  # read to its end: a roll at 1,000 ev/s writes ~100 MB
            read_committed_changelog(h.bootstrap, f"{h.app_id}-sessions-changelog", 300), 360
        )
        users = {inp.user for inp in inputs if inp.user}
        examples: list[dict[str, Any]] = []
        result.details["session_mismatches"] = session_mismatches(
            changelog, inputs, users, examples=examples
        )
        result.details["mismatch_examples"] = examples[:3]


EOS_OPTS: dict[str, Any] = {"processing_guarantee": "exactly_once", "session_store": "memory"}
"""Worker options of the ``exactly_once`` rows (the session changelog is what they check)."""


def _mode(guarantee: str) -> tuple[dict[str, Any], str]:
    """(worker options, scenario-name suffix) of a delivery scenario's ``guarantee``."""
    if guarantee == "exactly_once":
        return dict(EOS_OPTS), ", exactly_once (read_committed)"
    return {}, ""


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
    # a batch's inputs are committed right after its outputs were delivered, and the records
    # waiting for that never pass COLDSTREAM_MAX_UNCOMMITTED_EVENTS (the batch size by
    # default, however many batches are in flight): at most one batch's worth repeats
    bound = BATCH_SIZE
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
    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
) -> FaultResult:
    """SIGTERM the only worker mid-stream (a rolling deploy), start a new one. Recovery:
    old worker's exit -> first output of the new one. Drain: SIGTERM -> exit (``details``)."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "st")
    opts, suffix = _mode(guarantee)
    h.start_worker("a", **opts)
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
    t_exit = time.time()
    committed_at_exit = h.group_committed()
    h.start_worker("b", **opts)
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=120)
    log_tail = (h.workdir / "worker-a.log").read_text(errors="replace")[-2000:]
    result = account(
        "graceful stop (SIGTERM) + restart" + suffix,
        inputs,
        out,
        first_output_after(out, t_term + drain_s),
        exit_code=rc,
        drain_seconds=round(drain_s, 2),
        drain_budget_s=drain_budget_s,
        order_violations=order_violations(inputs, out),
        log_tail=log_tail if rc != 0 else "",
        committed_at_exit=committed_at_exit,
        answered_before_exit=answered_before(inputs, out, t_exit),
    )
    if guarantee == "exactly_once":
        _eos_counted(h, result, inputs, sessions=True)
    return result


@scenario(
    "sigterm_exactly_once",
    scaled=lambda s: {"n_events": scaled_count(1500, s), "rate": 300.0 * min(s, 3)},
)
def sigterm_exactly_once(h: Harness, **kw: Any) -> FaultResult:
    """:func:`sigterm` under ``exactly_once`` (the side-by-side row)."""
    return sigterm(h, guarantee="exactly_once", **kw)


@scenario(
    "kill9_exactly_once",
    scaled=lambda s: {"n_events": scaled_count(1500, s), "rate": 300.0 * min(s, 3), "kills": 5},
)
def kill9_exactly_once(
    h: Harness,
    *,
    n_events: int = 1500,
    n_users: int = 40,
    rate: float = 300.0,
    kills: int = 3,
) -> FaultResult:
    """``processing_guarantee=exactly_once``: SIGKILL the only worker ``kills`` times
    mid-stream (evenly spread), each time starting a new one. Counted by the independent
    ``read_committed`` checker (:mod:`devtools.faults.committed`): every input must have
    exactly one committed output, and every user's committed session exactly their events.
    A ``read_uncommitted`` reader (details) also sees the outputs of aborted transactions.
    Recovery: kill -> the new worker ready (the slowest of the kills)."""
    from devtools.faults.committed import read_committed_changelog

    n_users = max(n_users, n_events // 25 + 1)
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "k9eos")
    opts: dict[str, Any] = {"processing_guarantee": "exactly_once", "session_store": "memory"}
    h.start_worker("eos0", **opts)
    feeder = h.feeder(inputs, rate)
    feeder.start()
    restarts: list[float] = []
    for k in range(kills):
        at = (k + 1) * n_events / (kills + 1)
        wait_until(lambda at=at: feeder.sent >= at, 120, "the stream to be under way")
        w = h.workers[-1]
        assert w.proc is not None
        t_kill = time.time()
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait(10)
        w.proc = None
        h.start_worker(f"eos{k + 1}", **opts)
        restarts.append(time.time() - t_kill)
    feeder.join_checked(300)
    committed = _committed_outputs(h, inputs)
    sessions = run_coro(
        read_committed_changelog(h.bootstrap, f"{h.app_id}-sessions-changelog", 30), 90
    )
    uncommitted = h.collect(inputs, timeout_s=30)
    users = {inp.user for inp in inputs if inp.user}
    return FaultResult(
        f"worker kill -9 x{kills} + restart, exactly_once (read_committed)",
        len(inputs),
        committed.recommendations,
        committed.dlq,
        committed.lost,
        committed.duplicated,
        max(restarts) if restarts else None,
        {
            "kills": kills,
            "committed": committed.row(),
            "session_mismatches": session_mismatches(
                sessions, inputs, users, examples=h.mismatch_examples
            ),
            "mismatch_examples": h.mismatch_examples[:3],
            "read_uncommitted": {
                "outputs": uncommitted.n_recs,
                "duplicated": uncommitted.duplicated(),
                "lost": uncommitted.lost(len(inputs)),
            },
            "log_tail": (h.workdir / f"worker-eos{kills}.log").read_text(errors="replace")[-2000:],
        },
    )


@scenario("rebalance", scaled=lambda s: {"n_events": scaled_count(3000, s)})
def rebalance(
    h: Harness,
    *,
    n_events: int = 3000,
    n_users: int = 60,
    rate: float = 200.0,
    tail_events: int = 300,
    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
) -> FaultResult:
    """A second and a third worker join, then the first leaves (SIGTERM), while events flow
    (the stream goes on until ``tail_events`` after the leave; ``n_events`` caps it).
    Recovery: the longest pause between consecutive outputs during the changes."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "rb")
    opts, suffix = _mode(guarantee)
    a = h.start_worker("a", **opts)
    feeder = h.feeder(inputs, rate)
    feeder.start()
    t0 = time.time()
    wait_until(lambda: feeder.sent >= 3 * rate, 120, "the stream to be under way")
    h.start_workers("b", "c", **opts)
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
    result = account(
        "rebalance: +2 workers, -1 worker under load" + suffix,
        inputs,
        out,
        gap,
        order_violations=order_violations(inputs, out),
        leaver_exit_code=rc_a,
        sent_when_joined=joined_at,
        sent_when_left=left_at,
        others_alive=all(alive),
    )
    if guarantee == "exactly_once":
        _eos_counted(h, result, inputs, sessions=True)
    return result


@scenario("rebalance_exactly_once", scaled=lambda s: {"n_events": scaled_count(3000, s)})
def rebalance_exactly_once(h: Harness, **kw: Any) -> FaultResult:
    """:func:`rebalance` under ``exactly_once`` (the side-by-side row)."""
    return rebalance(h, guarantee="exactly_once", **kw)


@scenario(
    "rolling_restart",
    scaled=lambda s: {"rate": 1000.0 * min(s, 1.0), "steady_s": 10.0 * min(max(s, 0.5), 2)},
)
def rolling_restart(
    h: Harness,
    *,
    workers: int = 3,
    rate: float = 1000.0,
    n_users: int = 400,
    steady_s: float = 10.0,
    tail_s: float = 8.0,
    pre_stop_s: float = 2.0,
    drain_budget_s: float = 30.0,
    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
) -> FaultResult:
    """A Kubernetes rolling update of ``workers`` replicas (``maxSurge: 1``,
    ``maxUnavailable: 0``) under ``rate`` events/s: for each old worker in turn a new one
    starts and becomes ready, ``pre_stop_s`` passes (the preStop hook while the endpoint is
    removed), then the old one gets SIGTERM and drains; a new model version (v2) is
    published after the first replacement. Counted: lost, duplicated, end-to-end latency
    (``latency_ms``) before, during and after the roll, each drain (SIGTERM -> exit) and
    each surge worker's start (spawn -> ready), and how long v1 and v2 were served side by
    side. Recovery: the longest pause between consecutive outputs during the roll.
    Under ``exactly_once`` lost and duplicated are counted by the ``read_committed`` checker
    (:mod:`devtools.faults.committed`); under at-least-once by every record, and each of the
    ``2 * workers`` rebalances may repeat what was in flight on the moved partitions."""

    signer, _, v2 = _control_world(h, "roll")
    horizon_s = steady_s + workers * 25.0 + tail_s + 30.0  # enough input for a slow roll
    inputs = good_events(int(rate * horizon_s), n_users=n_users, tag=h.prefix + "rr")
    env = {"COLDSTREAM_DRAIN_TIMEOUT_S": str(drain_budget_s)}
    opts: dict[str, Any] = {"env": env}
    if guarantee == "exactly_once":
        opts.update(EOS_OPTS)
    old = h.start_workers(*[f"old{i}" for i in range(workers)], **opts)
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= rate * steady_s, 120 + steady_s, "the steady phase")
    t_roll = time.time()
    drains, readies, codes = [], [], []
    t_v2 = None
    new = []
    for i, w in enumerate(old):
        t0 = time.time()
        new.append(h.start_worker(f"new{i}", **opts))
        readies.append(round(time.time() - t0, 2))
        if i == 0:  # the new version lands mid-roll, as the trainer publishes it:
            # the store's pointer first (workers that start later load v2), then the record
            _, _, t_v2 = _publish_version(h, signer, 2, v2, {"rolling_restart": True})
        time.sleep(pre_stop_s)
        t_term = time.time()
        codes.append(w.stop(deadline_s=drain_budget_s + 5))
        drains.append(round(time.time() - t_term, 2))
    t_done = time.time()
    time.sleep(tail_s)  # the tail: events keep flowing to the new workers
    feeder.limit = min(feeder.limit, feeder.sent)
    feeder.join_checked(120)
    inputs = inputs[: feeder.sent]
    out = h.collect(inputs, timeout_s=180)
    recs = [v for vs in out.by_user.values() for v in vs]

    def phase(a: float, b: float) -> list[float]:
        return [float(v["latency_ms"]) for v in recs if a <= v["produced_at"] < b]

    lat = {
        "steady": phase(t_roll - steady_s / 2, t_roll),
        "roll": phase(t_roll, t_done),
        "after": phase(t_done + 2, float("inf")),
    }
    times = sorted(v["produced_at"] for v in recs if t_roll <= v["produced_at"] <= t_done)
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=None)
    v1_after = [
        v["produced_at"]
        for v in recs
        if v["model_version"] == "1" and t_v2 and v["produced_at"] > t_v2
    ]
    first_v2 = min((v["produced_at"] for v in recs if v["model_version"] == "2"), default=None)
    alive = [w.proc is not None and w.proc.poll() is None for w in new]
    p99s, p99r = pct(lat["steady"], 99), pct(lat["roll"], 99)
    result = account(
        f"rolling restart ({guarantee}): {workers} workers replaced one by one (maxSurge 1) at "
        f"{rate:.0f} ev/s, v2 published mid-roll",
        inputs,
        out,
        gap,
        guarantee=guarantee,
        duplicate_bound=2 * workers * 2 * BATCH_SIZE if guarantee == "at_least_once" else 0,
        rate=rate,
        workers=workers,
        roll_seconds=round(t_done - t_roll, 1),
        drain_seconds=drains,
        ready_seconds=readies,
        exit_codes=codes,
        latency_p50_ms={k: pct(v, 50) for k, v in lat.items()},
        latency_p99_ms={k: pct(v, 99) for k, v in lat.items()},
        latency_n={k: len(v) for k, v in lat.items()},
        p99_roll_over_steady=round(p99r / p99s, 2) if p99s and p99r else None,
        v2_first_after_s=round(first_v2 - t_v2, 2) if first_v2 and t_v2 else None,
        v1_served_after_v2_published_s=round(max(v1_after) - t_v2, 2) if v1_after and t_v2 else 0.0,
        new_workers_alive=all(alive),
        order_violations=order_violations(inputs, out),
        load_average=os.getloadavg(),
    )
    if guarantee == "exactly_once":  # the committed view is the one that counts
        _eos_counted(h, result, inputs, sessions=True)
    return result


@scenario(
    "rolling_restart_exactly_once",
    scaled=lambda s: {"rate": 1000.0 * min(s, 1.0), "steady_s": 10.0 * min(max(s, 0.5), 2)},
)
def rolling_restart_exactly_once(h: Harness, **kw: Any) -> FaultResult:
    """:func:`rolling_restart` under ``exactly_once`` (the side-by-side row)."""
    return rolling_restart(h, guarantee="exactly_once", **kw)


@scenario("broker_restart", broker="kafka", scaled=lambda s: {"n_events": scaled_count(1500, s)})
def broker_restart(
    h: Harness,
    broker: Any,
    *,
    n_events: int = 1500,
    n_users: int = 40,
    rate: float = 200.0,
    down_s: float = 5.0,
    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
) -> FaultResult:
    """Apache Kafka (persistent log dir) killed mid-stream and restarted on the same ports.
    Recovery: broker back -> first output after it. Under ``exactly_once`` a transaction
    that the dead broker cannot complete ends the worker (exit 5, by design: the next owner
    reads on from the committed offsets); a supervisor (here the scenario, in Kubernetes the
    Deployment) starts a new one, and the ``read_committed`` checker counts."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "br")
    opts: dict[str, Any] = {}
    if guarantee == "exactly_once":
        opts = {"processing_guarantee": "exactly_once", "session_store": "memory"}
    h.start_worker("a", **opts)
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= 0.3 * n_events, 120, "the stream to be under way")
    t_down = time.time()
    broker.kill()
    time.sleep(down_s)
    broker.start()
    t_up = time.time()
    exits: list[int | None] = []
    while feeder.is_alive() or (w.proc is not None and w.proc.poll() is not None):
        assert w.proc is not None
        if w.proc.poll() is not None:  # the supervisor's restart
            exits.append(w.proc.returncode)
            w.proc = None
            if len(exits) > 3:
                break
            w = h.start_worker(f"a{len(exits)}", **opts)
        time.sleep(0.5)
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=180)
    assert w.proc is not None
    alive = w.proc.poll() is None
    restarts = sum(
        p.read_text(errors="replace").count("serving model")
        for p in sorted(h.workdir.glob("worker-a*.log"))
    )
    result = account(
        f"Kafka broker kill + restart (persistent log, {guarantee})",
        inputs,
        out,
        first_output_after(out, t_up),
        guarantee=guarantee,
        worker_alive=alive,
        worker_starts=restarts,
        worker_exit_codes=exits,
        broker_down_seconds=round(t_up - t_down, 2),
        order_violations=order_violations(inputs, out),
    )
    if guarantee == "exactly_once":
        committed = _committed_outputs(h, inputs)
        result.details["committed"] = committed.row()
        result.lost, result.duplicated = committed.lost, committed.duplicated
    return result


@scenario(
    "broker_restart_exactly_once",
    broker="kafka",
    scaled=lambda s: {"n_events": scaled_count(1500, s)},
)
def broker_restart_exactly_once(h: Harness, broker: Any, **kw: Any) -> FaultResult:
    """:func:`broker_restart` under ``exactly_once`` (the side-by-side row)."""
    return broker_restart(h, broker, guarantee="exactly_once", **kw)


def _restart_tansu_with_topics(h: Harness, broker: Any, port: int, down_s: float) -> None:
    """Stop Tansu, start it again on the same port (empty: memory storage) and create the
    topics again, as an operator does after a Tansu restart."""
    from coldstream.core.topics import create_topics, load_topics

    broker.stop()
    time.sleep(down_s)
    broker.port = port
    broker.start()
    # the worker's table changelog included (Faust created it at start-up; Tansu forgot it)
    run_coro(
        create_topics(
            h.bootstrap,
            load_topics(),
            replication_factor=1,
            prefix=h.prefix,
            check_existing=False,
        ),
        120,
    )
    run_coro(
        create_compacted_topic(
            h.bootstrap, f"{h.app_id}-sessions-changelog", load_topics()["clicks"].partitions
        ),
        60,
    )


@scenario("tansu_restart", broker="tansu", scaled=lambda s: {"n_events": scaled_count(400, s)})
def tansu_restart(
    h: Harness, broker: Any, *, n_events: int = 400, down_s: float = 2.0
) -> FaultResult:
    """The embedded Tansu broker (memory storage) restarted under a running worker: the
    worker must not crash-loop. Tansu loses every topic, group and committed offset on
    restart, so events produced before it are gone by design (``details.lost_with_broker``);
    events produced after the topics are recreated must be answered. Recovery: topics back
    and worker resumed -> first answer.

    The worker is held (``SIGSTOP``) from just before the broker stops until the operator
    has created the topics again, as the runbook orders it (docs/reliability.md). A worker
    that reaches the empty broker first makes Tansu auto-create the topics it asks about with
    Tansu's default 4 partitions (4-partition ``clicks``/``purchases`` beside events keyed
    for 6: an operator error no worker can mend), and may commit its old offsets to the
    empty broker before it rejoins. Without the hold about 1 run in 6 lost events: 25-35 of 100
    (old offsets, or 4 partitions), or all 100 (a rebalance that never finished). Everything
    the restart takes away is still gone when the worker goes on: its connections, its group
    membership, the committed offsets and the logs it had read (they start again at 0)."""
    before = good_events(n_events // 2, n_users=20, tag=h.prefix + "tb")
    after = good_events(n_events - len(before), n_users=20, tag=h.prefix + "ta", seed=5)
    h.start_worker("a", session_timeout_s=2.0, idempotent_producer=False)  # Tansu: none
    w = h.workers[-1]
    h.produce(before)
    h.collect(before, timeout_s=60, idle_s=0.2)
    port = int(h.bootstrap.rsplit(":", 1)[1])
    assert w.proc is not None
    os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        _restart_tansu_with_topics(h, broker, port, down_s)
    finally:
        os.kill(w.proc.pid, signal.SIGCONT)
    t_up = time.time()
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


@scenario("fuzz_flood", scaled=lambda s: {"n_payloads": int(50_000 * s)})
def fuzz_flood(h: Harness, *, n_payloads: int = 3000, seed: int = 11) -> FaultResult:
    """Fuzzed payloads flat out through one worker (``coldstream bench faults --scale 2``:
    100,000): lone-surrogate escapes, deep nesting, huge numbers, control/bidi/zero-width
    characters, wrong types, missing keys, invalid UTF-8, random bytes (plus the few that
    happen to be valid). The breaker is off (ratio 1.0): every record must reach the worker.
    Checks: no crash (one worker start, alive at the end), every payload answered or
    dead-lettered, each DLQ record with the reason the validator gives."""
    inputs = bad_events(n_payloads, seed=seed)
    env = {**os.environ, "COLDSTREAM_DLQ_MAX_RATIO": "1.0"}
    h.start_worker("a", env=env)
    w = h.workers[-1]
    t0 = time.time()
    h.produce(inputs)
    out = h.collect(inputs, timeout_s=600, idle_s=1.0)
    want = expected_rejections(inputs)
    got = {(d["source_topic"], d["partition"], d["offset"]): d["error"] for d in out.dlq_values}
    wrong = sum(1 for i, reason in want.items() if got.get(inputs[i].pos) != reason)
    starts = (h.workdir / "worker-a.log").read_text(errors="replace").count("serving model")
    assert w.proc is not None
    return account(
        "fuzzed payloads through a worker",
        inputs,
        out,
        time.time() - t0,
        worker_alive=w.proc.poll() is None,
        worker_starts=starts,
        payloads=len(inputs),
        expected_dlq=len(want),
        dlq_reason_mismatches=wrong,
        reasons=dict(sorted(Counter(got.values()).items())),
    )


@scenario("fuzz_records", scaled=lambda s: {"n_records": int(500_000 * s)})
def fuzz_records(
    h: Harness, *, n_records: int = 3000, seed: int = 18, n_control: int = 200
) -> FaultResult:
    """The whole record fuzzed flat out through one worker (:mod:`devtools.faults.records`):
    keys absent, empty, random or up to 1 MB; headers many, large or null; record
    timestamps 0, 1 ms, negative, far future; every compression codec; junk on the control
    topics; forget sequences and bursts. ``coldstream bench faults --scale 2``: 1,000,000.
    Checks: one worker start and alive at the end (no crash), every record the broker took
    answered or dead-lettered exactly once, no DLQ record over the worker's cap."""
    from coldstream.core.records import DLQ_MAX_BYTES
    from devtools.faults.records import control_junk, with_codec
    from devtools.faults.records import fuzz_records as make

    inputs, kinds = make(n_records, seed=seed, tag=h.prefix + "fz")
    h.start_worker("a", env={**os.environ, "COLDSTREAM_DLQ_MAX_RATIO": "1.0"})
    w = h.workers[-1]
    t0 = time.time()
    junk = [Input(t, k, v, None, None) for t, k, v in control_junk(n_control, seed=seed)]
    h.produce(junk, tolerate_refusals=True)
    codecs: dict[str, int] = {}
    for codec, run in with_codec(inputs, seed).items():
        # one producer per codec; its runs interleave on the topics
        h.produce(run, tolerate_refusals=True, compression_type=codec)
        codecs[codec or "none"] = len(run)
    taken = [inp for inp in inputs if inp.refused is None]
    refused = Counter(
        (inp.refused or "").split(":")[0] for inp in inputs if inp.refused is not None
    )
    out = h.collect(taken, timeout_s=max(120.0, len(taken) / 500), idle_s=2.0)
    assert w.proc is not None
    alive = w.proc.poll() is None
    log_text = (h.workdir / "worker-a.log").read_text(errors="replace")
    return account(
        "whole records fuzzed through a worker",
        taken,
        out,
        time.time() - t0,
        worker_alive=alive,
        worker_exit_code=None if alive else w.proc.returncode,
        worker_starts=len(re.findall(r"(?<!still )serving model", log_text)),
        size_errors_in_log=log_text.count("MessageSizeTooLarge"),
        records=len(inputs),
        refused_by_producer_or_broker=dict(refused),
        control_records=len(junk),
        dlq_max_bytes=out.dlq_max_bytes,
        dlq_cap=DLQ_MAX_BYTES,
        codecs=codecs,
        kinds={k: dict(v) for k, v in kinds.items()},
    )


@scenario("hostile_partition", scaled=lambda s: {"phase_s": 10.0 * min(s, 3)})
def hostile_partition(
    h: Harness,
    *,
    phase_s: float = 8.0,
    victim_rate: float = 20.0,
    junk_per_event: int = 6,
    action: str = "alert",
) -> FaultResult:
    """One producer writes junk to one partition (``junk_per_event`` records per victim
    event: 125/s at the defaults, the audit's 250 every 2 s) while a victim user on that
    partition clicks at ``victim_rate``. Steady phase, then the attack. The victim's
    end-to-end latency (the recommendations' ``latency_ms``: producer create time to
    publish) in each phase; with the default ``dlq_breaker_action=alert`` the partition keeps
    flowing and the victim's p99 stays within 2x of steady state (``pause`` delayed it by
    seconds). Every input answered or dead-lettered."""

    from coldstream.core.topics import load_topics
    from stream_app.routing import partition_for

    parts = load_topics()["clicks"].partitions
    victim = f"{h.prefix}hp-victim"
    target = partition_for(victim.encode(), parts)
    attacker = next(
        f"{h.prefix}hp-bad{i}"
        for i in range(10_000)
        if partition_for(f"{h.prefix}hp-bad{i}".encode(), parts) == target
    )
    n_phase = int(victim_rate * phase_s)
    inputs: list[Input] = []
    for i in range(2 * n_phase):
        eid = f"{h.prefix}hp-{i}"
        value = event_payload(victim, str(1 + i % N_ITEMS), event_id=eid, ts=time.time())
        inputs.append(Input("clicks", victim.encode(), value, eid, victim))
        if i >= n_phase:  # the attack: junk on the victim's partition
            inputs += [
                Input("clicks", attacker.encode(), b"{not json", None, None)
                for _ in range(junk_per_event)
            ]
    attack_from = next(i for i, inp in enumerate(inputs) if inp.event_id is None)

    def rate(i: int) -> float:
        return victim_rate * (1 + junk_per_event) if i >= attack_from else victim_rate

    env = {
        **os.environ,
        "COLDSTREAM_DLQ_BREAKER_ACTION": action,
        "COLDSTREAM_DLQ_MIN_EVENTS": "50",
        "COLDSTREAM_DLQ_WINDOW": "200",
        "COLDSTREAM_DLQ_COOLDOWN_S": "5",
    }
    h.start_worker("a", env=env)
    f = h.feeder(inputs, rate=rate)
    f.start()
    f.join_checked(phase_s * 6 + 60)
    out = h.collect(inputs, timeout_s=120, idle_s=1.0)
    lat = {v["event_id"]: float(v["latency_ms"]) for v in out.by_user.get(victim, [])}
    steady = [
        lat[f"{h.prefix}hp-{i}"] for i in range(n_phase // 4, n_phase) if f"{h.prefix}hp-{i}" in lat
    ]
    attack = [
        lat[f"{h.prefix}hp-{i}"] for i in range(n_phase, 2 * n_phase) if f"{h.prefix}hp-{i}" in lat
    ]

    p99_steady, p99_attack = pct(steady, 99), pct(attack, 99)
    metrics = h.workers[-1].get_text("/metrics") if h.workers[-1].proc else ""
    return account(
        f"hostile producer on one partition (breaker: {action})",
        inputs,
        out,
        None,
        partition=target,
        junk_records=sum(1 for inp in inputs if inp.event_id is None),
        victim_events=2 * n_phase,
        victim_p50_ms={"steady": pct(steady, 50), "attack": pct(attack, 50)},
        victim_p99_ms={"steady": p99_steady, "attack": p99_attack},
        p99_ratio=round(p99_attack / p99_steady, 2) if p99_steady and p99_attack else None,
        load_average=os.getloadavg(),
        breaker_alerted="coldstream_dlq_breaker_open 1.0" in metrics
        or "coldstream_dlq_breaker_open 1" in metrics
        or "DLQ breaker open" in (h.workdir / "worker-a.log").read_text(errors="replace"),
    )


@scenario("api_flood", scaled=lambda s: {"phase_s": 10.0 * min(s, 3)})
def api_flood(
    h: Harness,
    *,
    phase_s: float = 8.0,
    event_rate: float = 200.0,
    api_rps: float = 350.0,
    n_users: int = 200,
) -> FaultResult:
    """Events at ``event_rate`` through one worker; in the second phase a client also sends
    ``api_rps`` ``GET /recommend`` for the stream's users (the audit's 16 clients at ~345/s
    moved event p50 15.6 -> 70 ms). The event latency (recommendations' ``latency_ms``) per
    phase, and how the API was answered (ranked, ``overloaded``), in one run."""
    import urllib.parse

    n_phase = int(event_rate * phase_s)
    inputs = good_events(2 * n_phase, n_users=n_users, tag=h.prefix + "af")
    h.start_worker("a")
    w = h.workers[-1]
    users = sorted({inp.user for inp in inputs if inp.user})
    flood_at = threading.Event()
    stop = threading.Event()
    answers: Counter = Counter()

    async def client() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            pacer_t0 = time.perf_counter()
            sent = 0
            pending: set[asyncio.Task[None]] = set()

            async def one(user: str) -> None:
                url = w.url(f"/recommend/{urllib.parse.quote(user, safe='')}")
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                        body = await r.json(content_type=None)
                        answers[str(body.get("fallback") or r.status)] += 1
                except Exception as e:  # noqa: BLE001 - counted: the figure is the stream's
                    answers[type(e).__name__] += 1

            while not stop.is_set():
                due = pacer_t0 + sent / api_rps
                now = time.perf_counter()
                if now < due:
                    await asyncio.sleep(due - now)
                    continue
                task = asyncio.ensure_future(one(users[sent % len(users)]))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.gather(*pending, return_exceptions=True)
            answers["sent"] = sent

    def flood() -> None:
        flood_at.wait()
        if not stop.is_set():
            asyncio.run(client())

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()

    def rate(i: int) -> float:
        if i == n_phase:
            flood_at.set()
        return event_rate

    t0 = time.time()
    f = h.feeder(inputs, rate=rate)
    f.start()
    f.join_checked(phase_s * 4 + 60)
    stop.set()
    flood_at.set()
    flooder.join(30)
    out = h.collect(inputs, timeout_s=120, idle_s=1.0)
    lat: dict[str, float] = {}
    for vals in out.by_user.values():
        for v in vals:
            lat[v["event_id"]] = float(v["latency_ms"])
    ids = [inp.event_id for inp in inputs]
    quiet = [lat[e] for e in ids[n_phase // 4 : n_phase] if e in lat]
    loud = [lat[e] for e in ids[n_phase + n_phase // 8 :] if e in lat]

    return account(
        f"/recommend flood ({api_rps:.0f}/s) against the stream ({event_rate:.0f} ev/s)",
        inputs,
        out,
        None,
        event_p50_ms={"quiet": pct(quiet, 50), "flood": pct(loud, 50)},
        event_p99_ms={"quiet": pct(quiet, 99), "flood": pct(loud, 99)},
        p99_ratio=round(pct(loud, 99) / pct(quiet, 99), 2) if quiet and loud else None,
        api_answers=dict(answers),
        api_rps_achieved=round(answers["sent"] / max(1e-9, time.time() - t0 - phase_s), 1),
        load_average=os.getloadavg(),
    )


@scenario("dlq_breaker_pause", scaled=lambda s: {"n_good": scaled_count(600, s)})
def dlq_breaker_pause(
    h: Harness, *, n_good: int = 600, n_bad: int = 600, cooldown_s: float = 3.0
) -> FaultResult:
    """One bad producer: every record of one user (hence one partition) is bad, the other
    users' events are good. The breaker pauses that partition only: the good events of the
    other partitions are all answered while it is open, the worker never exits, and after
    the cool-down the paused partition's records are answered or dead-lettered (nothing is
    lost). Recovery: first good answer after the breaker opened (details: the partition)."""
    bad_user = f"{h.prefix}bp-bad"
    bad = [
        Input("clicks", bad_user.encode(), b"{not json", f"{h.prefix}bp-x{i}", bad_user)
        for i in range(n_bad)
    ]
    good = good_events(n_good, n_users=60, tag=h.prefix + "bp")
    env = {
        **os.environ,
        "COLDSTREAM_DLQ_BREAKER_ACTION": "pause",  # the default is alert (no pause)
        "COLDSTREAM_DLQ_MIN_EVENTS": "100",
        "COLDSTREAM_DLQ_WINDOW": "200",
        "COLDSTREAM_DLQ_COOLDOWN_S": str(cooldown_s),
        # a small fetch buffer (four batches): the fetch loop waits for space in the middle
        # of a fetch, so the breaker pauses the partition while Faust is still handing out
        # that fetch's records, and Faust drops the rest of them (the resume must read them
        # again). With a large buffer that happens only when the machine is slow.
        "COLDSTREAM_FAST_PATH_BUFFER": "1",
    }
    h.start_worker("a", env=env, batch_size=50)
    w = h.workers[-1]
    h.produce(bad + good)
    t0 = time.time()
    out = h.collect(bad + good, timeout_s=120, idle_s=max(2.0, cooldown_s + 1))
    good_ids = {inp.event_id for inp in good}
    good_answered = sum(
        1
        for i, inp in enumerate(bad + good)
        if inp.event_id in good_ids and out.counts.get(i, 0) > 0
    )
    metrics = w.get_text("/metrics")
    opened = "DLQ circuit breaker open on" in (h.workdir / "worker-a.log").read_text(
        errors="replace"
    )
    assert w.proc is not None
    return account(
        "DLQ circuit breaker: one bad partition paused",
        bad + good,
        out,
        time.time() - t0,
        worker_alive=w.proc.poll() is None,
        breaker_opened=opened,
        good_answered=good_answered,
        good_total=len(good),
        paused_metric_seen="coldstream_dlq_breaker_open" in metrics,
    )


@scenario("dlq_breaker", scaled=lambda s: {"n_events": scaled_count(1000, s)})
def dlq_breaker(h: Harness, *, n_events: int = 1000, bad_share: float = 0.9) -> FaultResult:
    """Mostly bad input with ``COLDSTREAM_DLQ_BREAKER_ACTION=stop``: the breaker stops the
    worker with a clear message and exit code 3. Lost counts only *consumed* inputs without
    an output; unread ones stay in the topic (``details.unread``). Recovery: start -> exit."""
    n_bad = int(n_events * bad_share)
    inputs = interleave(
        good_events(n_events - n_bad, n_users=20, tag=h.prefix + "db"), bad_events(n_bad, seed=3), 4
    )
    h.produce(inputs)
    t0 = time.time()
    proc = h.spawn_worker(
        "a",
        # the breaker counts per input partition: 90% of ~100 events per partition trips it
        env={
            "COLDSTREAM_DLQ_MIN_EVENTS": "30",
            "COLDSTREAM_DLQ_WINDOW": "60",
            "COLDSTREAM_DLQ_BREAKER_ACTION": "stop",
        },
        batch_size=50,
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


@scenario("delivery_failure", scaled=lambda s: {"n_events": scaled_count(300, s)})
def delivery_failure(
    h: Harness,
    *,
    n_events: int = 300,
    guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
) -> FaultResult:
    """An output topic refuses every record with a non-retriable error: ``events-dlq`` is
    made compacted, and a compacted topic refuses records without a key (``INVALID_RECORD``);
    the inputs are refused events without a key, so their DLQ records have none. The worker
    must stop (exit 5) without committing past the failed sends; after the topic is fixed a
    new worker answers every event. (A refusal *for size* is not such a failure: see
    :func:`output_too_large`.) Recovery: topic fixed -> first answer."""
    inputs = [
        Input(
            "clicks",
            None,
            event_payload(f"df-u{i}", "1", event_id=f"{h.prefix}df-{i}", ts=time.time()),
            None,
            None,
        )
        for i in range(n_events)
    ]
    dlq_topic = h.topics["events-dlq"]
    run_coro(alter_topic_configs(h.bootstrap, dlq_topic, {"cleanup.policy": "compact"}), 60)
    opts, suffix = _mode(guarantee)
    proc = h.spawn_worker("a", **opts)
    h.produce(inputs)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        rc = None
    log_text = (h.workdir / "worker-a.log").read_text(errors="replace")
    committed = run_coro(
        committed_offsets(h.bootstrap, h.app_id, [h.topics["clicks"], h.topics["purchases"]]), 60
    )
    run_coro(alter_topic_configs(h.bootstrap, dlq_topic, {"cleanup.policy": "delete"}), 60)
    t_fixed = time.time()
    h.start_worker("b", **opts)
    out = h.collect(inputs, timeout_s=120)
    result = account(
        "an output topic refuses every record (non-retriable), then is fixed" + suffix,
        inputs,
        out,
        first_output_after(out, t_fixed),
        exit_code=rc,
        message="could not be delivered" in log_text,
        committed_before_fix=sum(committed.values()),
    )
    if guarantee == "exactly_once":  # the refused events have no user: no sessions to check
        _eos_counted(h, result, inputs, sessions=False)
    return result


@scenario("delivery_failure_exactly_once", scaled=lambda s: {"n_events": scaled_count(300, s)})
def delivery_failure_exactly_once(h: Harness, **kw: Any) -> FaultResult:
    """:func:`delivery_failure` under ``exactly_once`` (the side-by-side row)."""
    return delivery_failure(h, guarantee="exactly_once", **kw)


@scenario("output_too_large", scaled=lambda s: {"n_events": scaled_count(300, s)})
def output_too_large(h: Harness, *, n_events: int = 300) -> FaultResult:
    """The recommendations topic refuses every record for size (``max.message.bytes`` 64):
    never a worker exit -- each event is answered by a bounded DLQ record
    (``output_too_large``) and counted (``coldstream_output_too_large_total``); every input
    is answered, nothing waits for a fix."""
    inputs = good_events(n_events, n_users=30, tag=h.prefix + "ol")
    rec_topic = h.topics["recommendations"]
    run_coro(alter_topic_configs(h.bootstrap, rec_topic, {"max.message.bytes": "64"}), 60)
    try:
        h.start_worker("a")
        w = h.workers[-1]
        h.produce(inputs)
        out = h.collect(inputs, timeout_s=120)
        metrics = w.get_text("/metrics")
        assert w.proc is not None
        alive = w.proc.poll() is None
    finally:
        run_coro(alter_topic_configs(h.bootstrap, rec_topic, {"max.message.bytes": "1048588"}), 60)
    reasons = Counter(d["error"] for d in out.dlq_values)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("coldstream_output_too_large_total") and "dead_lettered" in line
    )
    return account(
        "the recommendations topic refuses every record for size",
        inputs,
        out,
        None,
        worker_alive=alive,
        reasons=dict(reasons),
        counted_dead_lettered=counted,
    )


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
def forget(
    h: Harness, *, n_users: int = 5, before: int = 4, after: int = 2, rebalance: bool = False
) -> FaultResult:
    """Each user: ``before`` events, a forget request (on ``forget-requests``), ``after``
    events, then a late copy of an event from before the request. Checks: one ack per request
    (no items, ``fallback: forgotten``); the session holds the later events only, under the
    forget marker; the late older event is answered ``forgotten`` and never stored.
    ``rebalance``: a second worker joins after the requests were answered and before the
    later events, so the users of the partitions it takes over are answered by a worker that
    only has the changelog (the marker must have travelled with the session)."""
    now = time.time() - 60
    phases: list[list[Input]] = [[], [], []]  # before, the requests, after (+ a late copy)
    for u in range(n_users):
        user = f"{h.prefix}fg-u{u}"
        for j in range(before + 1 + after):
            eid = f"{h.prefix}fg-{u}-{j}"
            ts = now + j
            if j == before:
                value = forget_request(user, event_id=eid, ts=ts)
                phases[1].append(Input("forget-requests", user.encode(), value, eid, user))
                continue
            value = event_payload(user, str(1 + (u * 7 + j) % N_ITEMS), event_id=eid, ts=ts)
            phases[0 if j < before else 2].append(Input("clicks", user.encode(), value, eid, user))
        late = f"{h.prefix}fg-{u}-late"  # a producer retry of event 0, under a new id
        value = event_payload(user, "1", event_id=late, ts=now)
        phases[2].append(Input("clicks", user.encode(), value, late, user))
    h.start_worker("a")
    w = h.workers[-1]
    inputs: list[Input] = []
    moved: list[str] = []
    for i, phase in enumerate(phases):  # each phase answered before the next is sent
        if rebalance and i == 2:
            b = h.start_worker("b")  # ready: it owns input partitions (taken from "a")
            owned_b = set(b.get_json("/ready")[1].get("owned_partitions") or [])
            moved = sorted(
                {inp.user for inp in inputs if inp.pos is not None and inp.pos[1] in owned_b}
            )
        inputs += phase
        h.produce(phase)
        out = h.collect(inputs, timeout_s=60, idle_s=0.3)
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
        late = [v for v in vals if v["event_id"] == f"{h.prefix}fg-{u}-late"]
        if len(late) != 1 or late[0]["fallback"] != "forgotten" or late[0]["items"]:
            problems.append(f"{user}: late older event answered {late}")
        stored = sessions.get(user)
        kept = stored.get("h", []) if isinstance(stored, dict) else []
        want = [f"{h.prefix}fg-{u}-{j}" for j in range(before + 1, before + 1 + after)]
        if [e[3] for e in kept] != want or not isinstance(stored, dict):
            problems.append(f"{user}: session {stored}")
    assert w.proc is not None
    # a user forgotten with nothing after it: only the marker is left
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
            "forget-requests",
            lone.encode(),
            forget_request(lone, event_id=lone + "-2", ts=now + 1),
            lone + "-2",
            lone,
        ),
    ]
    h.produce(extra)
    out2 = h.collect(inputs + extra, timeout_s=60)
    sessions = h.sessions()
    if sessions.get(lone) != {"forgotten_at": now + 1, "h": []}:
        problems.append(f"{lone}: not a bare marker ({sessions.get(lone, 'absent')})")
    title = "forget a user (privacy)" + (", a rebalance after the requests" if rebalance else "")
    return account(title, inputs + extra, out2, None, problems=problems, users_moved=len(moved))


@scenario("forget_rebalance", scaled=lambda s: {"n_users": scaled_count(12, s) // 10 or 12})
def forget_rebalance(h: Harness, *, n_users: int = 12) -> FaultResult:
    """:func:`forget` with a rebalance between the requests and the later events."""
    return forget(h, n_users=n_users, rebalance=True)


def forget_request(user_id: str, *, event_id: str, ts: float) -> bytes:
    """A forget request (for ``forget-requests``): ``event_type: forget`` and no ``item_id``
    (``docs/privacy.md``). Not built by ``event_payload``, whose ``item_id`` is required."""
    return json.dumps(
        {"event_id": event_id, "user_id": user_id, "event_type": "forget", "ts": ts},
        separators=(",", ":"),
    ).encode()


@scenario("stalled_partition", scaled=lambda s: {"n_events": scaled_count(600, s)})
def stalled_partition(
    h: Harness, *, n_events: int = 600, n_users: int = 60, stall_after_s: float = 3.0
) -> FaultResult:
    """A worker whose consumer cannot progress on ``clicks[0]`` (held paused by fault
    injection, :mod:`devtools.faults.stall`) while events wait on it and every other
    partition flows. Checks: ``/ready?partitions=1`` answers 503 naming ``clicks[0]`` as
    stalled, ``coldstream_partition_stalled`` is 1 for it and 0 for the others, ``/ready``
    (serving the API) and ``/healthz`` stay 200. Then every partition is held: ``/healthz``
    answers 503 (no batch while input waits). A healthy worker replaces it: nothing is lost.
    Recovery: inputs acknowledged -> the stall named by ``/ready``."""
    from devtools.faults.stall import held_now, hold, worker_env

    control = h.workdir / "stall-control.json"
    hold(control, [("clicks", 0)])
    liveness_after_s = 2 * stall_after_s
    env = worker_env(
        h.workdir,
        control,
        stall_after_s=stall_after_s,
        liveness_after_s=liveness_after_s,
        health_interval_s=0.5,
    )
    a = h.start_worker("a", env=env)
    p0 = (h.topics["clicks"], 0)
    wait_until(lambda: p0 in held_now(control), 30, "the worker to hold clicks[0]", interval_s=0.1)
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "sp")
    h.produce(inputs)
    t_sent = time.time()
    on_p0 = sum(1 for inp in inputs if inp.pos is not None and inp.pos[:2] == ("clicks", 0))

    def stall_named() -> tuple[int, Any] | None:
        status, body = a.get_json("/ready?partitions=1")
        named = [(s["topic"], s["partition"]) for s in body.get("stalled", [])]
        return (status, body) if ("clicks", 0) in named else None

    status_p, body_p = wait_until(
        stall_named, 60 + stall_after_s, "/ready to name clicks[0]", interval_s=0.2
    )
    detected_s = time.time() - t_sent

    def metric_says_stalled() -> dict[tuple[str, int], float] | None:
        gauges = stalled_gauges(a.get_text("/metrics"))
        return gauges if gauges.get(("clicks", 0)) == 1.0 else None

    gauges = wait_until(
        metric_says_stalled, 30, "coldstream_partition_stalled for clicks[0]", interval_s=0.2
    )
    metric_s = time.time() - t_sent
    status_api, _ = a.get_json("/ready")
    status_live, _ = a.get_json("/healthz")
    # now every partition is held: input waits and no batch at all is processed
    hold(control, "all")
    more = good_events(60, n_users=n_users, tag=h.prefix + "sp2")
    h.produce(more)
    t_all = time.time()

    def wedged() -> tuple[int, Any] | None:
        got = a.get_json("/healthz")
        return got if got[0] == 503 else None

    status_wedged, body_wedged = wait_until(
        wedged, 60 + liveness_after_s, "/healthz to be 503", interval_s=0.2
    )
    wedged_s = time.time() - t_all
    rc_a = a.stop(deadline_s=30)
    h.start_worker("b")  # no injection: it answers the backlog
    out = h.collect(inputs + more, timeout_s=120)
    others = [v for k, v in gauges.items() if k != ("clicks", 0)]
    return account(
        "stalled partition: named by /ready and the metrics; degraded, not dead",
        inputs + more,
        out,
        detected_s,
        stall_after_s=stall_after_s,
        metric_detected_s=round(metric_s, 2),
        events_on_stalled_partition=on_p0,
        ready_partitions_status=status_p,
        stalled=body_p.get("stalled"),
        metric_stalled=gauges.get(("clicks", 0)),
        metric_others=len(others),
        metric_others_max=max(others, default=None),
        ready_api_status=status_api,
        healthz_status_while_others_flow=status_live,
        healthz_status_when_all_held=status_wedged,
        healthz_when_all_held=body_wedged,
        wedged_detected_s=round(wedged_s, 2),
        liveness_after_s=liveness_after_s,
        stalled_worker_exit_code=rc_a,
    )


def answered_before(inputs: list[Input], out: Outputs, t: float) -> dict[str, int]:
    """Per input partition (``"topic[partition]"``), one past the highest offset answered
    before ``t`` (the answer's ``produced_at``): what a worker that drained and stopped at
    ``t`` must have committed."""
    at = {inp.event_id: inp.pos for inp in inputs if inp.pos is not None}
    done: dict[str, int] = {}
    for values in out.by_user.values():
        for v in values:
            pos = at.get(v.get("event_id"))
            if pos is not None and float(v.get("produced_at") or 0.0) <= t:
                key = f"{pos[0]}[{pos[1]}]"
                done[key] = max(done.get(key, 0), pos[2] + 1)
    return dict(sorted(done.items()))


def stalled_gauges(metrics: str) -> dict[tuple[str, int], float]:
    """``(topic, partition) -> value`` of ``coldstream_partition_stalled`` in an exposition."""
    out = {}
    prefix = "coldstream_partition_stalled{"
    for line in metrics.splitlines():
        if line.startswith(prefix):
            labels, value = line[len(prefix) :].rsplit("} ", 1)
            kv = dict(part.split("=", 1) for part in labels.split(","))
            out[(kv["topic"].strip('"'), int(kv["partition"].strip('"')))] = float(value)
    return out


@scenario("two_replicas_recommend", scaled=lambda s: {"n_users": scaled_count(40, s)})
def two_replicas_recommend(h: Harness, *, n_users: int = 40, per_user: int = 3) -> FaultResult:
    """Two workers share the group (each owns half the partitions). Every user's events are
    answered on ``recommendations``; then a round-robin client asks ``GET /recommend`` for
    each user, once on each replica. Checks: every known user gets their own answer from
    whichever replica is asked -- not a fallback, the same answer from both replicas, and
    the items the stream gave for the user's last event (the same session, the same
    model). Recovery: none (details: the owners, answers per replica)."""
    workers = h.start_workers("a", "b")
    now = time.time()
    inputs = []
    for u in range(n_users):
        user = f"{h.prefix}rr-u{u}"
        for j in range(per_user):
            eid = f"{h.prefix}rr-{u}-{j}"
            item = str(1 + (u * 11 + j * 5) % N_ITEMS)
            value = event_payload(user, item, event_id=eid, ts=now + j)
            inputs.append(Input("clicks", user.encode(), value, eid, user))
    h.produce(inputs)
    out = h.collect(inputs, timeout_s=120)
    partitions_of = {inp.user: inp.pos[1] for inp in inputs if inp.pos is not None}
    owned = {w.port: w.get_json("/ready")[1].get("owned_partitions") for w in workers}
    problems: list[str] = []
    asked = fallbacks = different = not_own = 0
    answered_by: dict[int, int] = defaultdict(int)
    for u in range(n_users):
        user = f"{h.prefix}rr-u{u}"
        last = out.by_user.get(user, [])[-1:]  # the stream's answer to the user's last event
        want = {i["item_id"] for i in last[0]["items"]} if last else None
        bodies = []
        for turn in range(2):  # round robin: user u starts on replica u % 2, then the other
            w = workers[(u + turn) % 2]
            status, body = w.get_json(f"/recommend/{user}?k=10")
            asked += 1
            answered_by[w.port] += status == 200
            if status != 200:
                problems.append(f"{user} on :{w.port}: {status} {body}")
                continue
            bodies.append(body)
            if body.get("fallback") is not None:
                fallbacks += 1
                problems.append(f"{user} on :{w.port}: fallback {body.get('fallback')}")
            elif want is None or {i["item_id"] for i in body["items"]} != want:
                not_own += 1
                problems.append(f"{user} on :{w.port}: items differ from the stream's")
        if len(bodies) == 2 and bodies[0]["items"] != bodies[1]["items"]:
            different += 1
    return account(
        "two replicas: /recommend answered by the owner of the user's partition",
        inputs,
        out,
        None,
        asked=asked,
        fallback_answers=fallbacks,
        not_the_users_answer=not_own,
        replicas_disagree=different,
        answered_by=dict(answered_by),
        owned_partitions=owned,
        user_partitions=len(set(partitions_of.values())),
        problems=problems[:10],
    )


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


# ------------------------------------------------------------------------------ the control plane


def _control_world(h: Harness, name: str) -> tuple[Any, Path, Path]:
    """A private signed store for a control-plane scenario: v1 (``CURRENT.json`` seq 1) and
    v2 (signed, not pointed at); the harness's workers serve it and trust ``dev_signer()``."""
    from devtools.checkpoints import dev_signer

    signer = dev_signer()
    store = h.workdir / f"store-{name}"
    v1 = make_checkpoint(store, n_items=N_ITEMS, seed=1, signer=signer)
    v2 = make_checkpoint(store, n_items=N_ITEMS, seed=2, signer=signer, point=False)
    h.model_store = store
    return signer, v1, v2


def _send_control(h: Harness, value: bytes, topic: str = "model-updates") -> float:
    from devtools.kafka_io import produce

    run_coro(produce(h.bootstrap, [(h.topics[topic], None, value)], acks="all"), 60)
    return time.time()


def _publish_version(
    h: Harness, signer: Any, version: int, ck: Path, metrics: dict[str, Any]
) -> tuple[Any, bytes, float]:
    """Publish ``version`` as the trainer does: the store's pointer first (workers that start
    later load it), then the signed ``model-updates`` record. Returns the pointer, the
    record's bytes and when it was sent."""
    from coldstream.core.checkpoint import manifest_sha256
    from coldstream.core.model_updates import make_update
    from coldstream.core.pointer import write_pointer

    sha = manifest_sha256(ck)
    ptr = write_pointer(h.model_store, version=version, manifest_sha256=sha, signer=signer)
    record = make_update(
        version=version,
        seq=ptr.seq,
        checkpoint_dir=ck,
        manifest_sha256=sha,
        metrics=metrics,
        signer=signer,
    ).to_json()
    return ptr, record, _send_control(h, record)


def _versions_after(out: Any, t: float) -> list[str]:
    rows = sorted((v["produced_at"], v["model_version"]) for vs in out.by_user.values() for v in vs)
    return [ver for at, ver in rows if at > t]


def _metric(w: Any, sample: str) -> float:
    import re

    m = re.search("^" + re.escape(sample) + r" (\S+)$", w.get_text("/metrics"), re.M)
    return float(m.group(1)) if m else 0.0


@scenario("forged_update", scaled=lambda s: {"n_events": scaled_count(600, s)})
def forged_update(
    h: Harness, *, n_events: int = 600, n_users: int = 30, rate: float = 150.0
) -> FaultResult:
    """Mid-stream, forged ``model-updates`` records for a real checkpoint: signed by an unknown
    key, claiming our key id with a wrong signature, unsigned, and 200 KB of nested JSON;
    then the genuine record. The forged ones are refused with their reasons (the worker keeps
    serving v1, nothing lost); the genuine one is followed. Recovery: genuine record -> first
    output of v2."""
    from coldstream.core.checkpoint import manifest_sha256
    from coldstream.core.model_updates import make_update
    from coldstream.core.signing import Signer

    signer, _, v2 = _control_world(h, "forged")
    attacker = Signer.generate()

    def update(by: Any, seq: int) -> bytes:
        return make_update(
            version=2,
            seq=seq,
            checkpoint_dir=v2,
            manifest_sha256=manifest_sha256(v2),
            metrics={"forged": by is not signer},
            signer=by,
        ).to_json()

    unknown = update(attacker, 99)
    claimed = json.loads(update(attacker, 99))
    claimed["key_id"] = signer.key_id  # our key id, the attacker's signature
    unsigned = {k: v for k, v in json.loads(update(signer, 99)).items() if k != "signature"}
    forged = [
        unknown,
        json.dumps(claimed).encode(),
        json.dumps(unsigned).encode(),
        b"[" * 200_000,
    ]
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "fu")
    w = h.start_worker("a")
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= 0.3 * n_events, 120, "the stream to be under way")
    for value in forged:
        _send_control(h, value)
    wait_until(lambda: feeder.sent >= 0.6 * n_events, 120, "more events after the forgeries")
    t_forged_done = time.time()
    t_genuine = _send_control(h, update(signer, 2))
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=120)
    after_forged = _versions_after(out, t_forged_done)
    first_v2 = min(
        (v["produced_at"] for vs in out.by_user.values() for v in vs if v["model_version"] == "2"),
        default=None,
    )
    assert w.proc is not None
    refusals = {
        r: _metric(w, f'coldstream_model_swap_failures_total{{reason="{r}"}}')
        for r in ("unknown_key", "bad_signature", "unsigned", "bad_record")
    }
    status, ready = w.get_json("/ready")
    return account(
        "forged model-updates records",
        inputs,
        out,
        (first_v2 - t_genuine) if first_v2 is not None else None,
        worker_alive=w.proc.poll() is None,
        refusals=refusals,
        v2_before_genuine=sum(
            1
            for vs in out.by_user.values()
            for v in vs
            if v["model_version"] == "2" and v["produced_at"] < t_genuine
        ),
        versions_after_forgeries=sorted(set(after_forged)),
        final_version=ready.get("model_version") if status == 200 else None,
        swaps_ok=_metric(w, 'coldstream_model_swaps_total{outcome="ok"}'),
        order_violations=order_violations(inputs, out),
    )


@scenario("replayed_update", scaled=lambda s: {"n_events": scaled_count(600, s)})
def replayed_update(
    h: Harness, *, n_events: int = 600, n_users: int = 30, rate: float = 150.0
) -> FaultResult:
    """Mid-stream: the genuine v2 update (seq 2), a rollback to v1 (pointer and update, seq
    3), then the v2 record replayed byte for byte (a valid signature, an old seq). The
    replay is skipped: every output after the rollback settles is v1. Recovery: rollback
    record -> first v1 output after it."""

    signer, v1, v2 = _control_world(h, "replayed")
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "ru")
    w = h.start_worker("a")
    feeder = h.feeder(inputs, rate)
    feeder.start()
    wait_until(lambda: feeder.sent >= 0.2 * n_events, 120, "the stream to be under way")
    promoted, genuine, _ = _publish_version(h, signer, 2, v2, {})
    wait_until(lambda: _metric(w, "coldstream_model_seq") == promoted.seq, 60, "the swap to v2")
    back, _, t_rollback = _publish_version(h, signer, 1, v1, {"rollback": True})
    wait_until(lambda: _metric(w, "coldstream_model_seq") == back.seq, 60, "the rollback to v1")
    t_settled = time.time()
    _send_control(h, genuine)  # the replay: the very bytes of the v2 record
    wait_until(lambda: feeder.sent >= 0.8 * n_events, 120, "more events after the replay")
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=120)
    after = _versions_after(out, t_settled + 0.5)
    first_v1 = min(
        (
            v["produced_at"]
            for vs in out.by_user.values()
            for v in vs
            if v["model_version"] == "1" and v["produced_at"] > t_rollback
        ),
        default=None,
    )
    assert w.proc is not None
    status, ready = w.get_json("/ready")
    skipped = _metric(
        w,
        'coldstream_control_records_total{outcome="skipped",reason="not_newer",topic="model-updates"}',
    )
    return account(
        "replayed model-updates record after a rollback",
        inputs,
        out,
        (first_v1 - t_rollback) if first_v1 is not None else None,
        worker_alive=w.proc.poll() is None,
        versions_after_replay=sorted(set(after)),
        outputs_after_replay=len(after),
        final_version=ready.get("model_version") if status == 200 else None,
        final_seq=_metric(w, "coldstream_model_seq"),
        swaps_ok=_metric(w, 'coldstream_model_swaps_total{outcome="ok"}'),
        replays_skipped=skipped,
        order_violations=order_violations(inputs, out),
    )
