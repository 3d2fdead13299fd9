"""Compressed input batches (a producer's choice, not ours) are answered like any other.

Before cramjam was a dependency, one zstd batch on ``clicks`` raised ``UnsupportedCodecError``
in Faust's fetcher and the worker process exited (every worker that read it did)."""

from __future__ import annotations

import asyncio
import json
import os
import time

from coldstream.core.records import event_payload
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import produce, read_until
from devtools.processes import WorkerProcess

CODECS = ("gzip", "snappy", "lz4", "zstd")


def test_aiokafka_can_decompress_every_codec() -> None:
    from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

    assert has_gzip() and has_snappy() and has_lz4() and has_zstd()


def test_a_worker_answers_compressed_batches(
    tmp_path, kafka_bootstrap, topic_prefix, make_topics
) -> None:
    names = make_topics(kafka_bootstrap, topic_prefix)
    make_checkpoint(tmp_path / "store", n_items=50, signer=dev_signer())
    now = time.time()
    with WorkerProcess(
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=tmp_path / "store",
        env={**os.environ, **verify_env()},
    ) as worker:
        ids = []
        records = []
        for c in CODECS:  # one batch per codec (zstd last: the one that crashed)
            batch = []
            for i in range(20):
                eid = f"{topic_prefix}{c}-{i}"
                ids.append(eid)
                user = f"u{i % 5}"
                batch.append(
                    (
                        names["clicks"],
                        user.encode(),
                        event_payload(user, str(1 + i), event_id=eid, ts=now),
                    )
                )
            records.append((c, batch))
        for c, batch in records:
            asyncio.run(produce(kafka_bootstrap, batch, compression_type=c))
        got = asyncio.run(
            read_until(kafka_bootstrap, [names["recommendations"]], count=len(ids), timeout_s=90)
        )
        assert worker.proc is not None and worker.proc.poll() is None
    answered = {json.loads(r.value)["event_id"] for r in got}
    assert answered == set(ids)
