"""Serving settings: read once per process, frozen, every field documented with its env var.

The only place in ``stream_app`` that reads the environment. Every field is read from
``COLDSTREAM_<FIELD NAME IN UPPER CASE>`` (e.g. ``COLDSTREAM_BATCH_SIZE``); the broker,
topic, model-store and security fields are the block shared with the trainer
(:class:`coldstream.core.settings.SharedSettings`). Every field has a default, so
``Settings()`` works on a fresh machine. Command-line flags override the environment:
``Settings().with_overrides(k=20)``.

``python -m stream_app.settings`` prints the table of settings (env var, default, meaning).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from coldstream.core.settings import ENV_PREFIX, SharedSettings, print_table, settings_table

__all__ = ["ENV_PREFIX", "Settings", "get_settings", "settings_table"]


class Settings(SharedSettings):
    """Settings of one serving worker (and of the serving commands)."""

    # -- broker ----------------------------------------------------------------------------
    app_id: str = "coldstream"
    """Faust app id: the consumer group id and the prefix of the table changelog topics."""
    topic_replication_factor: int = Field(1, ge=1)
    """Replication factor of the topics Faust creates itself (table changelogs); 3 in production."""
    profile: Literal["dev", "prod"] = "dev"
    """``dev``: short session timeout (Tansu joins a group in half of it); ``prod``: Kafka-like timeouts."""
    session_timeout_s: float | None = Field(None, gt=0)
    """Consumer group session timeout; unset: 6 s in the ``dev`` profile, 45 s in ``prod``."""
    fetch_max_wait_ms: int = Field(10, ge=0, le=60_000)
    """Consumer ``fetch_max_wait_ms`` (Faust hard-codes 1500 ms; Tansu answers a fetch only near it)."""
    producer_linger_ms: float = Field(5.0, ge=0, le=1000)
    """Producer linger: how long the worker's producer waits to fill a request (fewer, larger
    requests; adds at most this to latency)."""
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """Faust processing guarantee; ``exactly_once`` needs broker transactions (not Tansu)."""

    # -- model ----------------------------------------------------------------------------
    device: str = "auto"
    """Torch device: ``auto`` (cuda when visible, else cpu), ``cpu``, ``cuda``, ``cuda:N``."""
    threads: int = Field(0, ge=0)
    """Torch and FAISS CPU threads; 0 keeps the libraries' defaults."""
    hot_swap: bool = True
    """Follow ``model-updates`` and ``item-vectors`` (broadcast topics, read without a group) and
    hot-swap verified checkpoints (``stream_app.control``)."""
    popular_window_s: float = Field(3600.0, gt=0)
    """Popularity fallback counts only events of this recent window (seconds)."""
    online_window_s: float = Field(1800.0, gt=0)
    """Online quality: a later event of a user is joined to that user's recommendation made
    at most this long before it (``coldstream_online_hits_total``)."""

    # -- serving --------------------------------------------------------------------------
    batch_size: int = Field(512, ge=1, le=100_000)
    """Largest micro-batch (events) handed to the recommender at once."""
    batch_window_ms: float = Field(5.0, gt=0)
    """Longest wait for a micro-batch to fill (added latency at low rates)."""
    fast_path: bool = True
    """Take input records straight from the consumer's fetch loop in micro-batches
    (``stream_app.transport``); ``false``: a stock Faust agent with ``take_events``."""
    k: int = Field(10, ge=1, le=1000)
    """Items per recommendation."""
    max_history: int = Field(50, ge=1, le=1000)
    """Most recent events kept per user in the session table (and used to encode the user)."""
    cold_start_events: int = Field(3, ge=0)
    """A user with at most this many events is flagged ``cold_start: true``."""
    dedupe_capacity: int = Field(100_000, ge=0)
    """Most recent event ids remembered for de-duplication (per worker, in memory)."""
    max_event_bytes: int = Field(16_384, ge=64)
    """Larger input payloads go to the DLQ as ``oversize``."""
    max_future_skew_s: float = Field(3600.0, ge=0)
    """Event timestamps further than this in the future go to the DLQ as ``ts_future``."""
    dlq_max_ratio: float = Field(0.5, gt=0, le=1)
    """DLQ circuit breaker: over this share of DLQ'd events in the window, the breaker trips
    (see ``dlq_breaker_action``)."""
    dlq_breaker_action: Literal["stop", "pause"] = "stop"
    """What a tripped DLQ breaker does. ``stop`` (the production choice): log a clear message,
    commit what was answered and exit non-zero (exit code 3), so that a bad producer pages
    someone instead of dead-lettering a whole topic; the unread events stay in the topic.
    ``pause``: stop consuming for ``dlq_cooldown_s``, then go on."""
    dlq_window: int = Field(1000, ge=10)
    """Events in the circuit breaker's sliding window."""
    dlq_min_events: int = Field(200, ge=1)
    """The breaker never trips before this many events are in its window."""
    dlq_cooldown_s: float = Field(10.0, ge=0)
    """How long consumption pauses when the breaker trips (``dlq_breaker_action=pause``)."""
    drain_timeout_s: float = Field(30.0, gt=0, le=600)
    """Graceful stop (SIGTERM/SIGINT): the budget for finishing the in-flight micro-batch,
    flushing the producer, committing offsets and leaving the group; past it the worker
    exits anyway (uncommitted events are answered again by the next owner). Keep it below
    the deployment's terminationGracePeriodSeconds minus the preStop sleep."""

    # -- web ------------------------------------------------------------------------------
    web_port: int = Field(6066, ge=1, le=65535)
    """Port of the worker's web server (``/metrics``, ``/healthz``, ``/ready``, ``/recommend``)."""
    web_bind: str = "127.0.0.1"
    """Address the web server binds: loopback by default; a pod sets ``0.0.0.0`` (its
    NetworkPolicy admits only Prometheus, the kubelet's probes and the API's clients)."""
    log_level: str = "warning"
    """Worker log level."""

    @property
    def effective_session_timeout_s(self) -> float:
        """The session timeout in force (the profile's when unset)."""
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        return 6.0 if self.profile == "dev" else 45.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


if __name__ == "__main__":  # pragma: no cover
    print_table(Settings)
