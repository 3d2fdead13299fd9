"""Fault scenarios: what breaks, and proof that no input event is lost.

One implementation serves two callers: the fault suite (``tests/fault``, small streams) and
``coldstream bench faults`` (larger streams, a table and ``reports/faults.json``). Every
scenario returns a :class:`FaultResult`:

``events_in``         input records produced
``outputs``           ``recommendations`` records read back (duplicates included)
``dlq``               ``events-dlq`` records read back (duplicates included)
``lost``              inputs with neither a recommendation nor a DLQ record
``duplicated``        outputs beyond the first per input (consumers dedupe on ``event_id``)
``recovery_seconds``  per scenario, see its docstring (``None`` where nothing is recovered)

Inputs are matched to outputs by ``event_id`` (recommendations) or by source position
(topic, partition, offset: DLQ records, which also cover payloads without an id).
Workers are subprocesses in their own process groups, always stopped with a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import string
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.testing import WorkerProcess, make_checkpoint, run_coro

N_ITEMS = 200
COMMIT_INTERVAL_S = 2.8
"""Faust's default ``broker_commit_interval``: the uncommitted window is at most this long."""


# ------------------------------------------------------------------------------- results

@dataclass
class FaultResult:
    scenario: str
    events_in: int
    outputs: int
    dlq: int
    lost: int
    duplicated: int
    recovery_seconds: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        if d["recovery_seconds"] is not None:
            d["recovery_seconds"] = round(d["recovery_seconds"], 2)
        return d


@dataclass
class Input:
    """One produced record: what was sent and where it landed."""

    topic: str  # logical
    key: bytes | None
    value: bytes | None
    event_id: str | None
    user: str | None
    pos: tuple[str, int, int] | None = None  # (logical topic, partition, offset)


@dataclass
class Outputs:
    """What came back, per input."""

    counts: dict[int, int]
    n_recs: int
    n_dlq: int
    by_user: dict[str, list[dict[str, Any]]]
    """User -> recommendation values in output order (partition offset order)."""
    dlq_values: list[dict[str, Any]]
    unmatched: int
    produced_at: list[float]

    def lost(self, n: int) -> int:
        return sum(1 for i in range(n) if self.counts.get(i, 0) == 0)

    def duplicated(self) -> int:
        return sum(c - 1 for c in self.counts.values() if c > 1)


# ------------------------------------------------------------------------------- inputs

def good_events(n: int, *, n_users: int, tag: str, seed: int = 0) -> list[Input]:
    """``n`` valid events over ``n_users`` users, 80% clicks, 20% purchases."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        user = f"{tag}-u{rng.randrange(n_users)}"
        eid = f"{tag}-e{i}"
        topic = "purchases" if rng.random() < 0.2 else "clicks"
        body = {"event_id": eid, "user_id": user, "item_id": str(1 + rng.randrange(N_ITEMS)),
                "ts": time.time()}
        out.append(Input(topic, user.encode(), json.dumps(body).encode(), eid, user))
    return out


def _rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.printable) for _ in range(n))


def bad_payload(rng: random.Random, now: float) -> tuple[bytes | None, bytes | None]:
    """One hostile ``(key, value)``: random bytes, wrong types, missing/extra fields, huge
    strings and arrays, NaN/Infinity, negative and far-future timestamps, invalid UTF-8."""
    user = f"bad-{rng.randrange(1000)}"
    base: dict[str, Any] = {"event_id": uuid.uuid4().hex, "user_id": user,
                            "item_id": str(rng.randrange(1, N_ITEMS)), "ts": now}
    kind = rng.randrange(14)
    key: bytes | None = user.encode()
    if kind == 0:
        return key, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
    if kind == 1:
        f = rng.choice(["event_id", "user_id", "item_id", "ts"])
        base[f] = rng.choice([[1, 2], {"a": 1}, True, 1.5, "" if f != "ts" else "now", None])
    elif kind == 2:
        del base[rng.choice(["event_id", "user_id", "item_id", "ts"])]
    elif kind == 3:
        base[_rand_text(rng, 8).replace('"', "")] = rng.random()
    elif kind == 4:
        base["item_id"] = "x" * rng.randrange(200, 40_000)
    elif kind == 5:
        base["context"] = list(range(rng.randrange(1000, 10_000)))
    elif kind == 6:
        raw = json.dumps(base).replace(f'"ts": {now!r}', '"ts": ' + rng.choice(["NaN", "Infinity", "-Infinity", "1e999"]))
        return key, raw.encode()
    elif kind == 7:
        base["ts"] = -rng.uniform(1, 1e9)
    elif kind == 8:
        base["ts"] = now + rng.uniform(1e5, 1e12)
    elif kind == 9:
        raw = json.dumps(base).encode()
        i = rng.randrange(len(raw))
        return key, raw[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + raw[i:]
    elif kind == 10:
        base["user_id"] = rng.choice(["a b", "\x00", "", "é\n"])
    elif kind == 11:
        return key, rng.choice([b"[]", b"null", b"42", b'"str"', b"{", b"{}", b""])
    elif kind == 12:
        base["event_type"] = rng.choice(["like", "", "purchase", "FORGET"])
    else:
        key = b"someone-else"
    return key, json.dumps(base).encode()


def bad_events(n: int, *, seed: int = 1) -> list[Input]:
    """Hostile payloads; some happen to be valid (e.g. ``ts: 1.5``): :func:`expected_rejections`
    says which must go to the DLQ. ``event_id`` is set where a recommendation would carry it."""
    from coldstream.core.events import Rejection, validate_event

    rng = random.Random(seed)
    now = time.time()
    out = []
    for _ in range(n):
        k, v = bad_payload(rng, now)
        topic = rng.choice(["clicks", "purchases"])
        ev = validate_event(v, topic, key=k)
        valid = not isinstance(ev, Rejection)
        out.append(Input(topic, k, v, ev.event_id if valid else None, ev.user_id if valid else None))
    return out


def expected_rejections(inputs: list[Input]) -> dict[int, str]:
    """Index -> reason, for the inputs the validator refuses (the DLQ must hold exactly these)."""
    from coldstream.core.events import Rejection, validate_event

    out = {}
    for i, inp in enumerate(inputs):
        ev = validate_event(inp.value, inp.topic, key=inp.key)
        if isinstance(ev, Rejection):
            out[i] = ev.reason
    return out


def interleave(a: list[Input], b: list[Input], seed: int = 2) -> list[Input]:
    """``a`` and ``b`` merged at random, each keeping its own order."""
    rng = random.Random(seed)
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.random() < len(a) / (len(a) + len(b))):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


# ------------------------------------------------------------------------------- harness

def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Harness:
    """A broker, prefixed topics, a model store and the workers of one scenario."""

    def __init__(self, *, bootstrap: str, prefix: str, topics: dict[str, str], workdir: Path,
                 model_store: Path | None = None, worker_options: dict[str, Any] | None = None) -> None:
        self.bootstrap, self.prefix, self.topics = bootstrap, prefix, topics
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if model_store is None:
            model_store = self.workdir / "store"
            make_checkpoint(model_store, n_items=N_ITEMS)
        self.model_store = model_store
        self.app_id = prefix + "app"
        self.worker_options = {"threads": 1, "log_level": "warning", **(worker_options or {})}
        self.workers: list[WorkerProcess] = []
        self.mismatch_examples: list[dict[str, Any]] = []
        self.logical = {v: k for k, v in topics.items()}

    def start_worker(self, name: str, **options: Any) -> WorkerProcess:
        """Start a worker and wait until it is ready (one retry when its random web port was
        taken in between)."""
        opts = {**self.worker_options, **options}
        log_path = self.workdir / f"worker-{name}.log"
        for attempt in range(2):
            w = WorkerProcess(log_path=log_path, bootstrap=self.bootstrap, topic_prefix=self.prefix,
                              app_id=self.app_id, model_store=self.model_store, ready_timeout_s=120.0,
                              **opts)
            self.workers.append(w)
            try:
                return w.start()
            except RuntimeError as e:
                if attempt or "address already in use" not in str(e):
                    raise
        raise AssertionError("unreachable")

    def start_workers(self, *names: str, **options: Any) -> list[WorkerProcess]:
        """Start several workers at once (they join the group together)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(lambda n: self.start_worker(n, **options), names))

    def spawn_worker(self, name: str, *, env: dict[str, str] | None = None, **options: Any) -> subprocess.Popen:
        """A worker started without waiting for ``/ready`` (breaker scenario)."""
        from devtools.brokers import free_port
        from devtools.processes import start_process, worker_argv

        opts = {**self.worker_options, "web_port": free_port(), "web_bind": "127.0.0.1", **options}
        argv = worker_argv(bootstrap=self.bootstrap, topic_prefix=self.prefix, app_id=self.app_id,
                           model_store=self.model_store, **opts)
        proc = start_process(argv, env={**os.environ, **(env or {})},
                             log_path=self.workdir / f"worker-{name}.log")
        w = WorkerProcess(log_path=self.workdir / f"worker-{name}.log", **opts)
        w.proc = proc
        self.workers.append(w)
        return proc

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):  # cleanup goes on
                w.stop(deadline_s=10.0)
        self.workers.clear()

    # -- producing ------------------------------------------------------------------------
    def feeder(self, inputs: list[Input], rate: float | Callable[[int], float]) -> Feeder:
        return Feeder(self.bootstrap, self.topics, inputs, rate)

    def produce(self, inputs: list[Input]) -> None:
        f = self.feeder(inputs, rate=0.0)
        f.start()
        f.join_checked(300.0)

    # -- reading back -----------------------------------------------------------------------
    def collect(self, inputs: list[Input], *, timeout_s: float, idle_s: float = 1.0) -> Outputs:
        return run_coro(_collect(self.bootstrap, self.topics, inputs, timeout_s=timeout_s, idle_s=idle_s),
                    timeout_s + 60)

    def sessions(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """Last changelog value per user of the ``sessions`` table (``None``: tombstone)."""
        return run_coro(_read_changelog(self.bootstrap, f"{self.app_id}-sessions-changelog", timeout_s),
                    timeout_s + 60)



class Feeder(threading.Thread):
    """Produces ``inputs`` in order at ``rate`` events/s (0: as fast as possible; a callable:
    rate by index), recording where each landed. Survives a broker restart (long timeouts)."""

    def __init__(self, bootstrap: str, topics: dict[str, str], inputs: list[Input],
                 rate: float | Callable[[int], float]) -> None:
        super().__init__(daemon=True, name="fault-feeder")
        self.bootstrap, self.topics, self.inputs, self.rate = bootstrap, topics, inputs, rate
        self.sent = 0
        self.limit = len(inputs)
        """Lower it while running to end the stream early (the rest is never sent)."""
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported by join_checked
            self.error = e

    def join_checked(self, timeout_s: float) -> None:
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError(f"producer still sending after {timeout_s} s ({self.sent}/{len(self.inputs)})")
        if self.error is not None:
            raise self.error

    async def _main(self) -> None:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                             request_timeout_ms=120_000, retry_backoff_ms=200,
                             max_request_size=2_000_000)
        await p.start()
        try:
            pending: list[tuple[Input, Any]] = []
            t0 = time.monotonic()
            due = 0.0
            for i, inp in enumerate(self.inputs):
                if i >= self.limit:
                    break
                rate = self.rate(i) if callable(self.rate) else self.rate
                if rate > 0:
                    due += 1.0 / rate
                    lag = due - (time.monotonic() - t0)
                    if lag > 0.002:
                        await asyncio.sleep(lag)
                fut = await p.send(self.topics[inp.topic], value=inp.value, key=inp.key)
                pending.append((inp, fut))
                self.sent = i + 1
                if len(pending) >= 2000:
                    await _settle(pending)
            await _settle(pending)
            self.finished_at = time.time()
        finally:
            await p.stop()


async def _settle(pending: list[tuple[Input, Any]]) -> None:
    for inp, fut in pending:
        md = await fut
        inp.pos = (inp.topic, md.partition, md.offset)
    pending.clear()


async def _collect(bootstrap: str, topics: dict[str, str], inputs: list[Input], *, timeout_s: float,
                   idle_s: float) -> Outputs:
    from aiokafka import AIOKafkaConsumer

    by_eid = {inp.event_id: i for i, inp in enumerate(inputs) if inp.event_id}
    by_pos = {inp.pos: i for i, inp in enumerate(inputs) if inp.pos is not None}
    if len(by_pos) != len(inputs):
        raise RuntimeError(f"{len(inputs) - len(by_pos)} inputs were not acknowledged by the broker")
    rec_t, dlq_t = topics["recommendations"], topics["events-dlq"]
    c = AIOKafkaConsumer(rec_t, dlq_t, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100,
                         max_partition_fetch_bytes=4 * 1024 * 1024)
    await c.start()
    counts: dict[int, int] = defaultdict(int)
    by_user: dict[str, list[tuple[int, int, dict]]] = defaultdict(list)
    dlq_values: list[dict[str, Any]] = []
    n_recs = n_dlq = unmatched = 0
    produced_at: list[float] = []
    try:
        deadline = time.monotonic() + timeout_s
        done_at: float | None = None
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batch.items():
                for r in records:
                    v = json.loads(r.value)
                    if tp.topic == rec_t:
                        n_recs += 1
                        i = by_eid.get(v.get("event_id"))
                        by_user[v["user_id"]].append((r.partition, r.offset, v))
                        produced_at.append(float(v.get("produced_at") or 0.0))
                    else:
                        n_dlq += 1
                        dlq_values.append(v)
                        i = by_pos.get((v["source_topic"], v["partition"], v["offset"]))
                    if i is None:
                        unmatched += 1
                    else:
                        counts[i] += 1
            if len(counts) >= len(inputs):
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at >= idle_s:
                    break
    finally:
        await c.stop()
    ordered = {u: [v for _, _, v in sorted(rows, key=lambda x: (x[0], x[1]))] for u, rows in by_user.items()}
    return Outputs(dict(counts), n_recs, n_dlq, ordered, dlq_values, unmatched, sorted(produced_at))


async def _read_changelog(bootstrap: str, topic: str, timeout_s: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100)
    await c.start()
    last: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + timeout_s
        ends: dict[Any, int] = {}
        while time.monotonic() < deadline:
            parts = c.assignment()
            if parts and not ends:
                ends = await c.end_offsets(list(parts))
            if ends and all([await c.position(tp) >= ends[tp] for tp in parts]):
                break
            batch = await c.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    last[json.loads(r.key)] = None if r.value is None else json.loads(r.value)
    finally:
        await c.stop()
    return last


def account(name: str, inputs: list[Input], out: Outputs, recovery_s: float | None,
            **details: Any) -> FaultResult:
    details.setdefault("unmatched_outputs", out.unmatched)
    return FaultResult(name, len(inputs), out.n_recs, out.n_dlq, out.lost(len(inputs)),
                       out.duplicated(), recovery_s, details)


def first_output_after(out: Outputs, t: float) -> float | None:
    later = [p for p in out.produced_at if p > t]
    return (min(later) - t) if later else None


def order_violations(inputs: list[Input], out: Outputs) -> int:
    """Users whose first answers are not in their input order (per input topic: the two
    topics are separate logs, so only each topic's order is defined)."""
    want: dict[tuple[str, str], list[str]] = defaultdict(list)
    topic_of: dict[str, str] = {}
    for inp in inputs:
        if inp.event_id and inp.user:
            want[(inp.user, inp.topic)].append(inp.event_id)
            topic_of[inp.event_id] = inp.topic
    bad = set()
    for user, values in out.by_user.items():
        seen: dict[str, list[str]] = defaultdict(list)
        firsts = set()
        for v in values:
            e = v["event_id"]
            if e in topic_of and e not in firsts:
                firsts.add(e)
                seen[topic_of[e]].append(e)
        for topic, got in seen.items():
            if got != want[(user, topic)][: len(got)] or len(got) != len(want[(user, topic)]):
                bad.add(user)
    return len(bad)


def session_mismatches(h: Harness, inputs: list[Input], users: set[str], max_history: int = 50) -> int:
    """Users whose recovered session differs from their events in input order (ids exact, no
    entry twice). Within one user, clicks and purchases may interleave either way: the
    comparison is per topic order plus the same multiset."""
    sessions = h.sessions()
    want: dict[str, list[Input]] = defaultdict(list)
    for inp in inputs:
        if inp.user in users:
            want[inp.user].append(inp)
    bad = 0
    for user in users:
        got = sessions.get(user) or []
        ids = [e[3] for e in got if len(e) > 3]
        exp = [inp.event_id for inp in want[user]][-max_history:]
        if len(ids) != len(set(ids)) or sorted(ids) != sorted(exp):
            bad += 1
            h.mismatch_examples.append({"user": user, "want": len(exp), "got": len(ids),
                                        "repeated": len(ids) - len(set(ids)),
                                        "missing": sorted(set(exp) - set(ids))[:5],
                                        "extra": sorted(set(ids) - set(exp))[:5]})
    return bad


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------- scenarios

def kill9(h: Harness, *, n_events: int = 1500, n_users: int = 40, rate: float = 300.0,
          kill_at: float = 0.4) -> FaultResult:
    """SIGKILL the only worker mid-stream, start a new one. Recovery: kill -> first output
    of the new worker. Duplicates are bounded by the uncommitted window. Users get fewer
    events than ``max_history`` (more users if needed), so their sessions compare exactly."""
    n_users = max(n_users, n_events // 25 + 1)
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "k9")
    h.start_worker("a")
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    _wait(lambda: feeder.sent >= kill_at * n_events, 120, "the stream to be under way")
    t_kill = time.time()
    assert w.proc is not None
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait(10)
    w.proc = None
    sent_at_kill = feeder.sent
    h.start_worker("b")
    feeder.join_checked(300)
    out = h.collect(inputs, timeout_s=120)
    users = {inp.user for inp in inputs[max(0, sent_at_kill - int(rate * 5)):sent_at_kill] if inp.user}
    bound = int(rate * (COMMIT_INTERVAL_S + 1.0)) + 512
    return account("worker kill -9 + restart", inputs, out, first_output_after(out, t_kill),
                   duplicate_bound=bound, affected_users=len(users),
                   session_mismatches=session_mismatches(h, inputs, users),
                   mismatch_examples=h.mismatch_examples[:3],
                   order_violations=order_violations(inputs, out))


def sigterm(h: Harness, *, n_events: int = 1500, n_users: int = 40, rate: float = 300.0,
            stop_at: float = 0.4, drain_budget_s: float = 30.0) -> FaultResult:
    """SIGTERM the only worker mid-stream (a rolling deploy), start a new one. Recovery:
    old worker's exit -> first output of the new one. Drain: SIGTERM -> exit (``details``)."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "st")
    h.start_worker("a")
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    _wait(lambda: feeder.sent >= stop_at * n_events, 120, "the stream to be under way")
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
    return account("graceful stop (SIGTERM) + restart", inputs, out, first_output_after(out, t_term + drain_s),
                   exit_code=rc, drain_seconds=round(drain_s, 2), drain_budget_s=drain_budget_s,
                   order_violations=order_violations(inputs, out), log_tail=log_tail if rc != 0 else "")


def rebalance(h: Harness, *, n_events: int = 3000, n_users: int = 60, rate: float = 200.0,
              tail_events: int = 300) -> FaultResult:
    """A second and a third worker join, then the first leaves (SIGTERM), while events flow
    (the stream goes on until ``tail_events`` after the leave; ``n_events`` caps it).
    Recovery: the longest pause between consecutive outputs during the changes."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "rb")
    a = h.start_worker("a")
    feeder = h.feeder(inputs, rate)
    feeder.start()
    t0 = time.time()
    _wait(lambda: feeder.sent >= 3 * rate, 120, "the stream to be under way")
    h.start_workers("b", "c")
    joined_at = feeder.sent
    _wait(lambda: feeder.sent >= joined_at + 3 * rate or not feeder.is_alive(), 300, "more events")
    left_at = feeder.sent
    rc_a = a.stop(deadline_s=30)
    feeder.limit = min(feeder.limit, feeder.sent + tail_events)
    feeder.join_checked(300)
    inputs = inputs[:feeder.sent]
    t1 = time.time()
    out = h.collect(inputs, timeout_s=180)
    alive = [w.proc is not None and w.proc.poll() is None for w in h.workers if w is not a and w.ready_s]
    times = [p for p in out.produced_at if t0 <= p <= max(t1, max(out.produced_at, default=t1))]
    gap = max((b - a_ for a_, b in zip(times, times[1:], strict=False)), default=None)
    return account("rebalance: +2 workers, -1 worker under load", inputs, out, gap,
                   order_violations=order_violations(inputs, out), leaver_exit_code=rc_a,
                   sent_when_joined=joined_at, sent_when_left=left_at,
                   others_alive=all(alive))


def broker_restart(h: Harness, broker: Any, *, n_events: int = 1500, n_users: int = 40,
                   rate: float = 200.0, down_s: float = 5.0) -> FaultResult:
    """Apache Kafka (persistent log dir) killed mid-stream and restarted on the same ports.
    Recovery: broker back -> first output after it."""
    inputs = good_events(n_events, n_users=n_users, tag=h.prefix + "br")
    h.start_worker("a")
    w = h.workers[-1]
    feeder = h.feeder(inputs, rate)
    feeder.start()
    _wait(lambda: feeder.sent >= 0.3 * n_events, 120, "the stream to be under way")
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
    return account("Kafka broker kill + restart (persistent log)", inputs, out,
                   first_output_after(out, t_up), worker_alive=alive, worker_starts=restarts,
                   broker_down_seconds=round(t_up - t_down, 2),
                   order_violations=order_violations(inputs, out))


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
    return account("bad input through a worker", inputs, out, None, worker_alive=w.proc.poll() is None,
                   n_bad=n_bad, n_rejected=len(want), rejected_not_in_dlq_with_reason=wrong,
                   dlq_not_expected=len(got) - (len(want) - wrong),
                   unknown_reasons=sorted(set(reasons) - set(REASONS)), reasons=dict(reasons))


def dlq_breaker(h: Harness, *, n_events: int = 1000, bad_share: float = 0.9) -> FaultResult:
    """Mostly bad input: the breaker stops the worker with a clear message and a non-zero
    exit. Lost counts only *consumed* inputs without an output; unread ones stay in the
    topic (``details.unread``). Recovery: start -> exit."""
    n_bad = int(n_events * bad_share)
    inputs = interleave(good_events(n_events - n_bad, n_users=20, tag=h.prefix + "db"),
                        bad_events(n_bad, seed=3), 4)
    h.produce(inputs)
    t0 = time.time()
    proc = h.spawn_worker("a", env={"COLDSTREAM_DLQ_MIN_EVENTS": "100", "COLDSTREAM_DLQ_WINDOW": "200"},
                          batch_size=50)
    try:
        rc = proc.wait(120)
    except subprocess.TimeoutExpired:
        rc = None
    exit_s = time.time() - t0
    log_text = (h.workdir / "worker-a.log").read_text(errors="replace")
    out = h.collect(inputs, timeout_s=5, idle_s=0.5)
    committed = run_coro(_committed(h.bootstrap, h.app_id, [h.topics["clicks"], h.topics["purchases"]]), 60)
    consumed = [i for i, inp in enumerate(inputs)
                if inp.pos and committed.get((h.topics[inp.pos[0]], inp.pos[1]), 0) > inp.pos[2]]
    lost = sum(1 for i in consumed if out.counts.get(i, 0) == 0)
    res = account("DLQ circuit breaker (90% bad input)", inputs, out, exit_s, exit_code=rc,
                  message="DLQ circuit breaker tripped" in log_text,
                  committed_inputs=len(consumed), unread=len(inputs) - len(out.counts))
    res.lost = lost
    return res


async def _committed(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): m.offset for tp, m in offsets.items() if tp.topic in topics}


def burst(h: Harness, *, steady_rate: float = 20.0, steady_s: float = 4.0, burst_factor: int = 100,
          burst_s: float = 2.0, n_users: int = 500) -> FaultResult:
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
            r = _rss_mb(pid)
            if r is not None:
                rss.append(r)
            stop.wait(0.2)

    rss_before = _rss_mb(pid) or 0.0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    feeder = h.feeder(inputs, rate)
    feeder.start()
    try:
        _wait(lambda: feeder.sent >= n1 + n2, 300, "the burst to be sent")
        t_burst_end = time.time()
        feeder.join_checked(300)
        out = h.collect(inputs, timeout_s=180, idle_s=0.5)
    finally:
        stop.set()
        sampler.join(2)
    burst_ids = {inp.event_id for inp in inputs[n1:n1 + n2]}
    last_burst_answer = max((v["produced_at"] for vs in out.by_user.values() for v in vs
                             if v["event_id"] in burst_ids), default=None)
    drained = (last_burst_answer - t_burst_end) if last_burst_answer else None
    return account(f"burst {burst_factor}x steady rate", inputs, out, max(0.0, drained) if drained is not None else None,
                   steady_rate=steady_rate, burst_rate=steady_rate * burst_factor, burst_events=n2,
                   rss_before_mb=round(rss_before, 1), rss_peak_mb=round(max(rss, default=0.0), 1),
                   rss_after_mb=round(rss[-1] if rss else 0.0, 1))


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
            body: dict[str, Any] = {"event_id": eid, "user_id": user, "ts": now}
            if j == before:
                body["event_type"] = "forget"
            else:
                body["item_id"] = str(1 + (u * 7 + j) % N_ITEMS)
            inputs.append(Input("clicks", user.encode(), json.dumps(body).encode(), eid, user))
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
    extra = [Input("clicks", lone.encode(), json.dumps({"event_id": lone + "-1", "user_id": lone,
                                                         "item_id": "5", "ts": now}).encode(), lone + "-1", lone),
             Input("clicks", lone.encode(), json.dumps({"event_id": lone + "-2", "user_id": lone,
                                                         "event_type": "forget", "ts": now}).encode(),
                   lone + "-2", lone)]
    h.produce(extra)
    out2 = h.collect(inputs + extra, timeout_s=60)
    sessions = h.sessions()
    if lone not in sessions or sessions[lone] is not None:
        problems.append(f"{lone}: no tombstone ({sessions.get(lone, 'absent')})")
    return account("forget a user (privacy)", inputs + extra, out2, None, problems=problems)


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
        code = ("import resource,time,sys,json\n"
                "from coldstream.core.checkpoint import load_checkpoint, CheckpointError\n"
                "import torch, numpy\n"
                "r0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                "t=time.perf_counter()\n"
                "try:\n"
                f"    load_checkpoint({str(path)!r}); res='loaded'\n"
                "except CheckpointError as e:\n"
                "    res=e.reason\n"
                "r1=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
                "print(json.dumps({'result':res,'grew_mb':(r1-r0)/1024,'s':time.perf_counter()-t}))\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           cwd=str(Path(st.__file__).resolve().parents[2]))
        if p.returncode != 0:
            rows.append({"attack": attack, "result": f"crashed rc={p.returncode}", "stderr": p.stderr[-500:]})
            continue
        rows.append({"attack": attack, **json.loads(p.stdout.strip().splitlines()[-1])})
    refused = sum(1 for r in rows if r.get("result") not in ("loaded",) and "crash" not in str(r.get("result")))
    return FaultResult("hostile checkpoints (model store)", len(rows), 0, refused, len(rows) - refused, 0,
                       max((r.get("s", 0.0) for r in rows), default=None),
                       {"attacks": rows, "max_rss_growth_mb": round(max((r.get("grew_mb", 0.0) for r in rows), default=0.0), 1)})


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


# ------------------------------------------------------------------------------- bench CLI

SCENARIOS = ("kill9", "sigterm", "rebalance", "broker_restart", "tansu_restart", "bad_input",
             "dlq_breaker", "burst", "forget", "hostile_checkpoint")


def register(bench_parser: argparse.ArgumentParser) -> None:
    """Add ``faults`` under ``coldstream bench``."""
    bsub = next(a for a in bench_parser._actions if isinstance(a, argparse._SubParsersAction))
    f = bsub.add_parser("faults", help="fault scenarios: kill -9, SIGTERM, rebalance, broker restart, "
                                       "bad input, breaker, burst, forget, hostile checkpoints")
    f.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    f.add_argument("--scale", type=float, default=2.0, help="stream size relative to the fault suite")
    f.add_argument("--out", default="reports/faults.json")
    f.add_argument("--workdir", default=None, help="keep logs here (default: a temp dir)")
    f.add_argument("--bootstrap", default=None,
                   help="an Apache Kafka to use (default: start one); broker restarts always get a private one")
    f.set_defaults(func=cmd_bench_faults)


def run_scenario(name: str, *, scale: float, workdir: Path, shared: dict[str, Any]) -> FaultResult:
    """One scenario on fresh topics (Apache Kafka; a private broker for broker restarts)."""
    from coldstream.core.topics import create_topics, load_topics, prefixed
    from devtools.brokers import KafkaBroker, TansuBroker

    def n(x: int) -> int:
        return max(50, int(x * scale))

    if name == "hostile_checkpoint":
        return hostile_checkpoint(workdir / name)
    prefix = f"faults-{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}-"
    private = None
    if name == "broker_restart":
        private = KafkaBroker(workdir / name / "kafka").start()
        bootstrap = private.bootstrap
    elif name == "tansu_restart":
        private = TansuBroker().start()
        bootstrap = private.bootstrap
    elif shared.get("bootstrap"):
        bootstrap = shared["bootstrap"]
    else:
        if "kafka" not in shared:
            shared["kafka"] = KafkaBroker(workdir / "kafka").start()
        bootstrap = shared["kafka"].bootstrap
    specs = load_topics()
    topics = {k: s.name for k, s in prefixed(specs, prefix).items()}
    run_coro(create_topics(bootstrap, specs, replication_factor=1, prefix=prefix), 120)
    h = Harness(bootstrap=bootstrap, prefix=prefix, topics=topics, workdir=workdir / name)
    try:
        if name == "kill9":
            return kill9(h, n_events=n(1500), rate=300.0 * min(scale, 3))
        if name == "sigterm":
            return sigterm(h, n_events=n(1500), rate=300.0 * min(scale, 3))
        if name == "rebalance":
            return rebalance(h, n_events=n(3000))
        if name == "broker_restart":
            return broker_restart(h, private, n_events=n(1500))
        if name == "tansu_restart":
            return tansu_restart(h, private, n_events=n(400))
        if name == "bad_input":
            return bad_input(h, n_bad=n(300), n_good=n(400))
        if name == "dlq_breaker":
            return dlq_breaker(h, n_events=n(1000))
        if name == "burst":
            return burst(h, steady_rate=50.0, burst_s=2.0 * min(scale, 5))
        if name == "forget":
            return forget(h, n_users=n(5) // 10 or 5)
        raise ValueError(f"unknown scenario {name!r}")
    finally:
        h.close()
        if private is not None:
            private.close() if hasattr(private, "close") else private.stop()


def tansu_restart(h: Harness, broker: Any, *, n_events: int = 400, down_s: float = 2.0) -> FaultResult:
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
    run_coro(_create_changelog(h.bootstrap, f"{h.app_id}-sessions-changelog",
                           load_topics()["clicks"].partitions), 60)
    h.produce(after)
    out = h.collect(after, timeout_s=120)
    assert w.proc is not None
    alive = w.proc.poll() is None
    starts = (h.workdir / "worker-a.log").read_text(errors="replace").count("serving model")
    return account("Tansu broker restart (memory storage)", after, out, first_output_after(out, t_up),
                   worker_alive=alive, worker_starts=starts, lost_with_broker=len(before))


async def _create_changelog(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    except Exception:  # noqa: BLE001 - it may exist already
        pass
    finally:
        await admin.close()


def cmd_bench_faults(args: argparse.Namespace) -> int:
    import tempfile

    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios: {sorted(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="coldstream-faults-"))
    shared: dict[str, Any] = {"bootstrap": args.bootstrap}
    results: list[FaultResult] = []
    try:
        for name in names:
            t = time.monotonic()
            try:
                r = run_scenario(name, scale=args.scale, workdir=workdir, shared=shared)
            except Exception as e:  # noqa: BLE001 - one failed scenario is a row, not a crash
                r = FaultResult(name, 0, 0, 0, -1, -1, None, {"error": f"{type(e).__name__}: {e}"[:500]})
            r.details["wall_seconds"] = round(time.monotonic() - t, 1)
            results.append(r)
            print(_table([r]) if len(results) == 1 else _table([r], header=False), flush=True)
    finally:
        if "kafka" in shared:
            shared["kafka"].stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([r.row() for r in results], indent=1) + "\n")
    print(f"\nwritten {out} (logs in {workdir})")
    return 0 if all(r.lost == 0 for r in results) else 1


def _table(rows: Sequence[FaultResult], header: bool = True) -> str:
    cols = ("scenario", "events in", "recs out", "DLQ", "lost", "duplicated", "recovery s")
    widths = (46, 9, 9, 6, 5, 10, 10)
    lines = []
    if header:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        rec = "-" if r.recovery_seconds is None else f"{r.recovery_seconds:.2f}"
        vals = (r.scenario, r.events_in, r.outputs, r.dlq, r.lost, r.duplicated, rec)
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(vals, widths, strict=True)))
    return "\n".join(lines)
