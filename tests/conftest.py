"""Shared fixtures: real brokers (never skipped), unique topic names, GPU gating.

* ``kafka_bootstrap`` (session): ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else one Apache Kafka
  (KRaft) started for the whole session in a fresh temp dir. If it cannot start, every
  test using it errors with the reason (missing jars, Java, the broker's log tail).
* ``tansu_bootstrap`` (session): one embedded Tansu broker.
* ``kafka_broker_factory`` (function): start private ``KafkaBroker``s (persistent dirs,
  kill/restart for fault tests); all are stopped at the end of the test.
* ``topic_prefix`` (function): a unique, readable prefix such as ``test-round-trip-1a2b3c4d-``.
* ``make_topics`` (function): ``make_topics(bootstrap, prefix) -> {"clicks": "<prefix>clicks",
  ...}`` creates the prefixed topics of ``kafka/topics.yaml`` (replication factor 1) and
  deletes them after the test. A plain function: usable from sync and async tests.
* ``delete_topics_after`` (function): ``delete_topics_after(bootstrap, names)`` for topics a
  test creates itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstream.core.topics import create_topics, load_topics, prefixed
from devtools.brokers import KafkaBroker, TansuBroker
from devtools.kafka_io import delete_topics, run_coro

# --------------------------------------------------------------------------- markers

#: The marker of every test under each top folder of ``tests/`` (``--strict-markers``
#: declares them in pyproject.toml). Orthogonal markers (``tansu``, ``gpu``, ``slow``) are
#: set on the tests themselves.
FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "fault": "fault",
    "deploy": "deploy",
}
TESTS_DIR = Path(__file__).resolve().parent


def folder_marker(path: Path) -> str:
    """The marker of a test file: its top folder under ``tests/`` (``unit``, ...)."""
    rel = Path(path).resolve().relative_to(TESTS_DIR)
    if len(rel.parts) < 2 or rel.parts[0] not in FOLDER_MARKERS:
        raise pytest.UsageError(f"{path}: tests live in tests/{{{','.join(FOLDER_MARKERS)}}}/")
    return FOLDER_MARKERS[rel.parts[0]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, folder_marker(item.path)))
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    try:
        import torch

        available = bool(torch.cuda.is_available())
        reason = "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
    except Exception as e:  # torch missing or broken: say so rather than erroring
        available = False
        reason = f"needs a CUDA GPU: torch could not be imported ({e!r})"
    if not available:
        skip = pytest.mark.skip(reason=reason)
        for item in gpu_items:
            item.add_marker(skip)


# --------------------------------------------------------------------------- brokers


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka (or the cluster named by the env var)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-session"))
    try:
        broker.start()  # raises BrokerError with the reason: the test errors, never skips
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tansu_bootstrap() -> Iterator[str]:
    """Bootstrap servers of an embedded Tansu broker (memory storage)."""
    broker = TansuBroker()
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.close()


@pytest.fixture
def kafka_broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., KafkaBroker]]:
    """``kafka_broker_factory(log_dir=None, **kwargs)`` -> a started private KafkaBroker."""
    brokers: list[KafkaBroker] = []

    def factory(log_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> KafkaBroker:
        if log_dir is None:
            log_dir = tmp_path_factory.mktemp("kafka-private")
        broker = KafkaBroker(log_dir, **kwargs)
        brokers.append(broker)
        return broker.start()

    yield factory
    for broker in brokers:
        broker.stop()


# --------------------------------------------------------------------------- topics


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """Unique per test: ``<test name, sanitised>-<8 hex>-`` (only [a-z0-9-]: Kafka treats
    '.' and '_' as colliding in metric names)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"{name}-{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def delete_topics_after() -> Iterator[Callable[[str, Iterable[str]], None]]:
    """``delete_topics_after(bootstrap, names)``: delete those topics when the test ends
    (best effort; keeps the session broker small)."""
    made: list[tuple[str, list[str]]] = []
    yield lambda bootstrap, names: made.append((bootstrap, list(names)))
    for bootstrap, names in made:
        with contextlib.suppress(Exception):
            run_coro(delete_topics(bootstrap, names), timeout_s=30.0)


@pytest.fixture
def make_topics(
    delete_topics_after: Callable[[str, Iterable[str]], None],
) -> Callable[..., dict[str, str]]:
    def factory(
        bootstrap: str,
        prefix: str,
        *,
        names: Iterable[str] | None = None,
        replication_factor: int = 1,
    ) -> dict[str, str]:
        specs = load_topics()
        if names is not None:
            specs = {n: specs[n] for n in names}
        physical = {logical: s.name for logical, s in prefixed(specs, prefix).items()}
        delete_topics_after(bootstrap, physical.values())
        run_coro(
            create_topics(bootstrap, specs, replication_factor=replication_factor, prefix=prefix)
        )
        return physical

    return factory
