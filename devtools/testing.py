"""Helpers for tests, benchmarks and the demo: small checkpoints and synthetic events.

A randomly initialised :class:`~coldstream.core.student.Student` saved with
:func:`coldstream.core.checkpoint.save_checkpoint` is a valid model for everything serving does.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np


def make_checkpoint(root: Path | str, *, n_items: int = 200, dim: int = 32, text_dim: int = 32,
                    seed: int = 0, encoder: str = "gru", n_text_only: int = 0,
                    titles: list[str] | None = None, max_len: int = 50) -> Path:
    """Save a random student over items ``"1" .. str(n_items + n_text_only)`` and return its path.

    The last ``n_text_only`` items have no id embedding (placed by text alone)."""
    import torch

    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.student import Student, StudentConfig

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    total = n_items + n_text_only
    model = Student(StudentConfig(n_items=n_items, text_dim=text_dim, dim=dim, max_len=max_len,
                                  encoder=encoder, dropout=0.0))
    ids = [str(i + 1) for i in range(total)]
    return save_checkpoint(
        root, model=model, item_ids=ids,
        item_text_vecs=rng.standard_normal((total, text_dim)).astype(np.float32),
        item_titles=titles or [f"Item {i}" for i in ids],
        metrics={"note": "random test model"}, teacher={"name": "none"},
    )


def event_bytes(user_id: str, item_id: str, *, event_id: str | None = None, ts: float | None = None,
                **extra: object) -> tuple[str, bytes]:
    """``(event_id, JSON bytes)`` of a valid click/purchase event."""
    eid = event_id or uuid.uuid4().hex
    body = {"event_id": eid, "user_id": user_id, "item_id": item_id,
            "ts": time.time() if ts is None else ts, **extra}
    return eid, json.dumps(body).encode()


# ------------------------------------------------------------------------------- live helpers

def run_coro(coro: Any, timeout_s: float = 120.0) -> Any:
    """Run a coroutine to completion on a private loop in a helper thread, so that sync
    helpers also work inside async code whose loop is already running."""
    import asyncio
    import threading

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    thread = threading.Thread(target=target, name="run-coro", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"coroutine did not finish within {timeout_s} s")
    if "error" in result:
        raise result["error"]
    return result["value"]



async def produce(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]],
                  **client_kwargs: Any) -> list:
    """Send ``(topic, key, value)`` records in order; returns their ``RecordMetadata``.
    ``client_kwargs``: security arguments (``Settings.kafka_client_kwargs()``)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all",
                                request_timeout_ms=10_000, **client_kwargs)
    await producer.start()
    try:
        futures = [await producer.send(t, value=v, key=k) for t, k, v in records]
        return [await f for f in futures]
    finally:
        await producer.stop()


async def consume(bootstrap: str, topics: list[str], *, until: int, timeout_s: float = 60.0,
                  idle_s: float = 0.0, **client_kwargs: Any) -> list:
    """Read ``topics`` from the beginning until ``until`` records arrived (then wait
    ``idle_s`` more for unexpected extras) or ``timeout_s`` passed; returns ConsumerRecords."""
    import asyncio
    import time as _time

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50,
                                **client_kwargs)
    await consumer.start()
    out: list = []
    try:
        deadline = _time.monotonic() + timeout_s
        extra_deadline = None
        while _time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if len(out) >= until:
                if extra_deadline is None:
                    extra_deadline = _time.monotonic() + idle_s
                if _time.monotonic() >= extra_deadline:
                    break
            await asyncio.sleep(0)
        return out
    finally:
        await consumer.stop()



async def bootstrap_fails(bootstrap: str, **client_kwargs: Any) -> str:
    """Start a producer that must fail to bootstrap (wrong credentials, wrong CA, plaintext
    against TLS); returns the error text, raises ``AssertionError`` if it connects."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client_kwargs)
    try:
        await asyncio.wait_for(p.start(), 20)
    except (TimeoutError, KafkaError, OSError) as e:
        return repr(e)
    finally:
        await p.stop()
    raise AssertionError(f"a client with {client_kwargs.get('security_protocol')} bootstrapped "
                         f"from {bootstrap}")


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()

class WorkerProcess:
    """A serving worker subprocess (own process group) for tests and benchmarks.

    ``with WorkerProcess(bootstrap=..., topic_prefix=..., model_store=...) as w: w.url(...)``;
    always stopped with a deadline (SIGTERM, wait, SIGKILL)."""

    def __init__(self, *, log_path: Path | str, ready_timeout_s: float = 90.0, **options: object) -> None:
        from devtools.brokers import free_port

        self.options = dict(options)
        self.options.setdefault("web_port", free_port())
        self.options.setdefault("web_bind", "127.0.0.1")
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.proc = None
        self.ready_s: float | None = None

    @property
    def port(self) -> int:
        return int(self.options["web_port"])  # type: ignore[arg-type]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WorkerProcess:
        from devtools.processes import start_process, wait_ready, worker_argv

        self.proc = start_process(worker_argv(**self.options), log_path=self.log_path)
        try:
            self.ready_s = wait_ready(self.url("/ready"), proc=self.proc, timeout_s=self.ready_timeout_s,
                                      log_path=self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, deadline_s: float = 15.0) -> int | None:
        from devtools.processes import stop_process

        if self.proc is None:
            return None
        rc = stop_process(self.proc, deadline_s=deadline_s)
        self.proc = None
        return rc

    def get_json(self, path: str) -> tuple[int, object]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get_text(self, path: str) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url(path), timeout=10) as r:
            return r.read().decode()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
