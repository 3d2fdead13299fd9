"""Fault-suite fixtures: a :class:`devtools.faults.Harness` per test (fresh prefixed topics,
own consumer group, tmp model store); every worker it started is stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.faults import Harness


@pytest.fixture(scope="session")
def fault_model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from devtools.checkpoints import dev_signer, make_checkpoint
    from devtools.faults import N_ITEMS

    root = tmp_path_factory.mktemp("fault-store")
    make_checkpoint(root, n_items=N_ITEMS, signer=dev_signer())  # the harness's workers trust it
    return root


@pytest.fixture
def harness_factory(
    make_topics, topic_prefix: str, tmp_path: Path, fault_model_store: Path
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(bootstrap: str, **options: object) -> Harness:
        topics = make_topics(bootstrap, topic_prefix)
        h = Harness(
            bootstrap=bootstrap,
            prefix=topic_prefix,
            topics=topics,
            workdir=tmp_path / "h",
            model_store=fault_model_store,
            worker_options=options or None,
        )
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


@pytest.fixture
def harness(kafka_bootstrap: str, harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory(kafka_bootstrap)
