"""The one place where the serving worker's Kafka consumer is tuned beyond Faust's settings.

Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Tansu answers a
fetch only near that wait, and Kafka holds a fetch until data or the wait, so low-rate
latency would be 0.5-1.5 s. :class:`Transport` (used by :class:`~stream_app.app.ColdstreamApp`)
creates the consumer exactly as Faust does, then replaces the fetch wait before the consumer
starts (aiokafka builds its fetcher from ``_fetch_max_wait_ms`` in ``start()``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_MAX_WAIT_MS = 10


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        if not hasattr(consumer, "_fetch_max_wait_ms"):  # pragma: no cover - aiokafka changed
            raise RuntimeError("aiokafka consumer has no _fetch_max_wait_ms: update stream_app.transport")
        consumer._fetch_max_wait_ms = int(wait)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = Consumer
