"""The fault harness: a broker, prefixed topics, a model store and the workers of one
scenario; the :class:`Feeder` that streams the inputs; and the collection that matches
what came back to what was sent.

Workers are :class:`~devtools.processes.WorkerProcess` subprocesses (own process groups,
working directory and logs in the harness's ``workdir``), always stopped with a deadline.
They log at ``warning``; ``COLDSTREAM_FAULT_LOG_LEVEL=info`` keeps their rebalance,
recovery and seek logs (what a fault report's ``order_examples`` are read against).
Producing goes through :func:`devtools.kafka_io.produce`, reading back through
:func:`devtools.kafka_io.read_until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.faults.accounting import Outputs
from devtools.faults.inputs import N_ITEMS, Input
from devtools.kafka_io import committed_offsets, produce, read_until, run_coro
from devtools.processes import WorkerProcess

__all__ = ["Feeder", "Harness", "collect", "read_changelog"]


class Harness:
    """A broker, prefixed topics, a model store and the workers of one scenario."""

    def __init__(
        self,
        *,
        bootstrap: str,
        prefix: str,
        topics: dict[str, str],
        workdir: Path,
        model_store: Path | None = None,
        worker_options: dict[str, Any] | None = None,
        worker_env: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap, self.prefix, self.topics = bootstrap, prefix, topics
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if model_store is None:  # signed with this process's key (its public key: key_env)
            model_store = self.workdir / "store"
            make_checkpoint(model_store, n_items=N_ITEMS, signer=dev_signer())
        self.model_store = model_store
        self.app_id = prefix + "app"
        self.worker_options = {
            "threads": 1,
            "log_level": os.environ.get("COLDSTREAM_FAULT_LOG_LEVEL", "warning"),
            **(worker_options or {}),
        }
        self.worker_env = dict(worker_env or {})
        """Added to every worker's environment (``PYTHONPATH``: workers from another tree)."""
        self.workers: list[WorkerProcess] = []
        self.mismatch_examples: list[dict[str, Any]] = []
        self.logical = {v: k for k, v in topics.items()}

    def _worker(self, name: str, env: dict[str, str] | None = None, **opts: Any) -> WorkerProcess:
        w = WorkerProcess(
            log_path=self.workdir / f"worker-{name}.log",
            bootstrap=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=self.app_id,
            model_store=self.model_store,
            ready_timeout_s=120.0,
            env={
                **os.environ,
                **verify_env(),
                **(env or {}),
                **self.worker_env,
            },  # trusts dev_signer()
            **opts,
        )
        self.workers.append(w)
        return w

    def start_worker(self, name: str, **options: Any) -> WorkerProcess:
        """Start a worker and wait until it is ready (one retry when its random web port was
        taken in between)."""
        opts = {**self.worker_options, **options}
        for attempt in range(2):
            w = self._worker(name, **opts)
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

    def spawn_worker(
        self, name: str, *, env: dict[str, str] | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        """A worker started without waiting for ``/ready`` (breaker scenario); ``env`` is
        added to the inherited environment."""
        w = self._worker(
            name, env={**os.environ, **(env or {})}, **{**self.worker_options, **options}
        )
        return w.spawn()

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):  # cleanup goes on
                w.stop(deadline_s=10.0)
        self.workers.clear()

    # -- producing ------------------------------------------------------------------------
    def feeder(self, inputs: list[Input], rate: float | Callable[[int], float]) -> Feeder:
        return Feeder(self.bootstrap, self.topics, inputs, rate)

    def produce(
        self, inputs: list[Input], *, tolerate_refusals: bool = False, **producer_kwargs: Any
    ) -> None:
        """Send ``inputs`` flat out. ``tolerate_refusals``: a record the producer or broker
        refuses gets ``refused`` set instead of failing the stream."""
        f = Feeder(
            self.bootstrap,
            self.topics,
            inputs,
            0.0,
            tolerate_refusals=tolerate_refusals,
            producer_kwargs=producer_kwargs,
        )
        f.start()
        f.join_checked(1800.0)

    # -- reading back -----------------------------------------------------------------------
    def collect(self, inputs: list[Input], *, timeout_s: float, idle_s: float = 1.0) -> Outputs:
        out: Outputs = run_coro(
            collect(self.bootstrap, self.topics, inputs, timeout_s=timeout_s, idle_s=idle_s),
            timeout_s + 60,
        )
        if out.lost(len(inputs)):  # for the report: did the group commit past them?
            out.group_committed = self.group_committed()
        return out

    def group_committed(self) -> dict[str, int] | None:
        """The workers' group's committed offset per input partition (logical
        ``"topic[partition]"``), or ``None`` if the broker would not say (best effort)."""
        names = {self.topics[t]: t for t in ("clicks", "purchases")}
        try:
            got = run_coro(committed_offsets(self.bootstrap, self.app_id, list(names)), 60)
            return {f"{names[t]}[{p}]": int(o) for (t, p), o in sorted(got.items())}
        except Exception:  # noqa: BLE001 - a diagnostic only
            return None

    def sessions(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """Last changelog value per user of the ``sessions`` table (``None``: tombstone)."""
        return run_coro(
            read_changelog(self.bootstrap, f"{self.app_id}-sessions-changelog", timeout_s),
            timeout_s + 60,
        )


class Feeder(threading.Thread):
    """Produces ``inputs`` in order at ``rate`` events/s (0: as fast as possible; a callable:
    rate by index), recording where each landed. Survives a broker restart (long timeouts)."""

    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, str],
        inputs: list[Input],
        rate: float | Callable[[int], float],
        *,
        tolerate_refusals: bool = False,
        producer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="fault-feeder")
        self.tolerate_refusals = tolerate_refusals
        self.producer_kwargs = dict(producer_kwargs or {})
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
            raise TimeoutError(
                f"producer still sending after {timeout_s} s ({self.sent}/{len(self.inputs)})"
            )
        if self.error is not None:
            raise self.error

    def _on_sent(self, i: int, _record: Any, _t: float) -> None:
        self.sent = i + 1

    @staticmethod
    def _on_acked(_i: int, record: Any, md: Any) -> None:
        inp: Input = record[3]
        inp.pos = (inp.topic, md.partition, md.offset)

    @staticmethod
    def _send_kwargs(record: Any) -> dict[str, Any]:
        inp: Input = record[3]
        extra: dict[str, Any] = {}
        if inp.headers is not None:
            extra["headers"] = inp.headers
        if inp.timestamp_ms is not None:
            extra["timestamp_ms"] = inp.timestamp_ms
        return extra

    @staticmethod
    def _on_failed(_i: int, record: Any, exc: BaseException) -> None:
        record[3].refused = f"{type(exc).__name__}: {exc}"[:200]

    async def _main(self) -> None:
        records = ((self.topics[inp.topic], inp.key, inp.value, inp) for inp in self.inputs)
        options: dict[str, Any] = {
            "acks": "all",
            "linger_ms": 5,
            "request_timeout_ms": 120_000,
            "retry_backoff_ms": 200,
            "max_request_size": 2_000_000,
            **self.producer_kwargs,
        }
        await produce(
            self.bootstrap,
            records,
            send_kwargs=self._send_kwargs,
            on_failed=self._on_failed if self.tolerate_refusals else None,
            rate=self.rate,
            min_sleep_s=0.002,
            stop=lambda i: i >= self.limit,
            on_sent=self._on_sent,
            on_acked=self._on_acked,
            settle_every=2000,
            **options,
        )
        self.finished_at = time.time()


async def collect(
    bootstrap: str, topics: dict[str, str], inputs: list[Input], *, timeout_s: float, idle_s: float
) -> Outputs:
    """Read ``recommendations`` and ``events-dlq`` until every input has an output (then
    ``idle_s`` more, for duplicates) or ``timeout_s``; match each output to its input."""
    by_eid = {inp.event_id: i for i, inp in enumerate(inputs) if inp.event_id}
    by_pos = {inp.pos: i for i, inp in enumerate(inputs) if inp.pos is not None}
    if len(by_pos) != len(inputs):
        raise RuntimeError(
            f"{len(inputs) - len(by_pos)} inputs were not acknowledged by the broker"
        )
    rec_t, dlq_t = topics["recommendations"], topics["events-dlq"]
    counts: dict[int, int] = defaultdict(int)
    by_user: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
    dlq_values: list[dict[str, Any]] = []
    tally = {"recs": 0, "dlq": 0, "unmatched": 0, "dlq_max_bytes": 0}
    produced_at: list[float] = []

    def match(records: list[Any], _now: float) -> None:
        for r in records:
            v = json.loads(r.value)
            if r.topic == dlq_t:
                tally["dlq_max_bytes"] = max(tally["dlq_max_bytes"], len(r.value))
            if r.topic == rec_t:
                tally["recs"] += 1
                i = by_eid.get(v.get("event_id"))
                by_user[v["user_id"]].append((r.partition, r.offset, v))
                produced_at.append(float(v.get("produced_at") or 0.0))
            else:
                tally["dlq"] += 1
                dlq_values.append(v)
                i = by_pos.get((v["source_topic"], v["partition"], v["offset"]))
            if i is None:
                tally["unmatched"] += 1
            else:
                counts[i] += 1

    await read_until(
        bootstrap,
        [rec_t, dlq_t],
        until=lambda: len(counts) >= len(inputs),
        timeout_s=timeout_s,
        idle_s=idle_s,
        on_records=match,
        keep=False,
        fetch_max_wait_ms=100,
        poll_ms=200,
        max_records=10_000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    ordered = {
        u: [{**v, "_out": [p, o]} for p, o, v in sorted(rows, key=lambda x: (x[0], x[1]))]
        for u, rows in by_user.items()
    }
    return Outputs(
        dict(counts),
        tally["recs"],
        tally["dlq"],
        ordered,
        dlq_values,
        tally["unmatched"],
        sorted(produced_at),
        tally["dlq_max_bytes"],
    )


async def read_changelog(bootstrap: str, topic: str, timeout_s: float) -> dict[str, Any]:
    """Last value per key of a table changelog, read to its current end (``None``: tombstone)."""
    last: dict[str, Any] = {}
    for r in await read_until(
        bootstrap, [topic], to_end=True, timeout_s=timeout_s, fetch_max_wait_ms=100, poll_ms=200
    ):
        last[json.loads(r.key)] = None if r.value is None else json.loads(r.value)
    return last
