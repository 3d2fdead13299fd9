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
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

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
    fetch_min_bytes: int = Field(1, ge=1, le=64 * 1024 * 1024)
    """Consumer ``fetch_min_bytes``: the broker holds a fetch until this much data is there or
    ``fetch_max_wait_ms`` passed. 1 answers at once with whatever arrived: at a steady rate
    the fetch loop then turns as fast as the worker's CPU lets it, a few records per turn."""
    producer_linger_ms: float = Field(5.0, ge=0, le=1000)
    """Producer linger: how long the worker's producer waits to fill a request (fewer, larger
    requests; adds at most this to latency)."""
    produce_batches: bool = True
    """Send a micro-batch's outputs per partition as record batches (one future per batch,
    sent without the linger: ``stream_app.produce``); false: one ``send()`` per record."""
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """``at_least_once`` (default: outputs deduplicated downstream by ``event_id``) or
    ``exactly_once``: per micro-batch and input partition, the outputs, the session
    changelog records and the input offsets commit in one Kafka transaction
    (``stream_app.transactions``; read outputs with ``isolation.level=read_committed``).
    ``exactly_once`` needs a broker with transactions (refused at start on one without, such
    as the embedded Tansu), the fast path and the memory session store."""

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
    popular_capacity: int = Field(1000, ge=10, le=1_000_000)
    """Popularity fallback: item counters kept per time bucket (a bounded heavy-hitter summary
    of served items, each user counted once per item and bucket; ``stream_app.online``)."""
    online_window_s: float = Field(1800.0, gt=0)
    """Online quality: a later event of a user is joined to that user's recommendation made
    at most this long before it (``coldstream_online_hits_total``)."""

    # -- item index (stream_app/index/) -----------------------------------------------------
    index: Literal["auto", "flat", "ivf"] = "auto"
    """Item index: ``flat`` (exact), ``ivf`` (FAISS IVF, approximate; trained when a model is
    loaded or swapped in, off the event loop), ``auto``: exact below ``index_exact_below``
    items, IVF from there on."""
    index_exact_below: int = Field(10_000, ge=0)
    """``index=auto``: catalogues smaller than this are searched exactly."""
    index_nlist: int = Field(0, ge=0, le=262_144)
    """IVF lists; 0: 4 x sqrt(items) rounded to a power of two (16 to 16384)."""
    index_nprobe: int = Field(0, ge=0, le=262_144)
    """IVF lists probed per query; 0: tuned at build time to the smallest that reaches
    ``index_target_recall`` on the build sample."""
    index_target_recall: float = Field(0.97, gt=0, le=1)
    """Recall@10 against exact search that the tuned ``index_nprobe`` reaches on the sample."""
    index_codes: Literal["pq", "flat"] = "pq"
    """IVF list codes: ``pq`` (4-bit fast-scan PQ, candidates re-scored exactly from the item
    table) or ``flat`` (full vectors: exact within the probed lists, slower)."""
    index_refine: int = Field(8, ge=1, le=1000)
    """``pq`` codes: candidates re-scored exactly per wanted result (of the first ten)."""
    index_recall_sample: int = Field(256, ge=0, le=100_000)
    """Queries (the model's users of random histories) of the build-time recall measurement
    (``coldstream_index_recall``) and of the ``index_nprobe`` tuning; 0: neither."""
    index_gpu: bool = True
    """Put the index on a GPU when FAISS sees one (``faiss.get_num_gpus() > 0``)."""

    @model_validator(mode="after")
    def _check_index(self) -> Settings:
        if self.index_nlist and self.index_nprobe > self.index_nlist:
            raise ValueError(
                f"index_nprobe ({self.index_nprobe}) exceeds index_nlist ({self.index_nlist})"
            )
        return self

    # -- serving --------------------------------------------------------------------------
    batch_size: int = Field(512, ge=1, le=100_000)
    """Largest micro-batch (events) handed to the recommender at once."""
    batch_window_ms: float = Field(2.0, gt=0)
    """Longest wait for a micro-batch to fill (added latency at low rates). 2 ms, not the
    earlier 5: a lower p50 at 1,000 ev/s in every pair measured, the same or lower p99 at
    1,000 and 5,000 ev/s in both guarantees (``coldstream bench latency``, docs/results.md)."""
    fast_path: bool = True
    """Take input records straight from the consumer's fetch loop in micro-batches
    (``stream_app.transport``); ``false``: a stock Faust agent with ``take_events``."""
    fast_path_buffer: int = Field(10_000, ge=1, le=10_000_000)
    """Most input records held between the fetch loop and the serving task (the fetch loop
    waits beyond it: memory is bounded by this times the record size). At least four
    micro-batches (``4 * batch_size``) are always allowed."""
    k: int = Field(10, ge=1, le=1000)
    """Items per recommendation."""
    session_store: Literal["auto", "memory", "rocksdb"] = "auto"
    """Where sessions live: ``rocksdb`` (Faust's RocksDB store through ``rocksdict``: on disk
    under ``data_dir``, memory bounded by its caches, a restart replays only the changelog
    it has not seen), ``memory`` (tests, the demo), ``auto``: rocksdb in the ``prod`` profile,
    memory in ``dev``."""
    data_dir: Path | None = None
    """Faust's data directory (the RocksDB session files); unset: ``<app_id>-data`` in the
    working directory (the pod mounts a volume there)."""
    standby_replicas: int = Field(0, ge=0, le=8)
    """Standby copies of each session partition kept warm by other workers (Faust's
    ``table_standby_replicas``): a rebalance or a crash then resumes from a copy instead of
    replaying the whole changelog."""
    session_ttl_s: float = Field(0.0, ge=0)
    """Idle sessions expire after this many seconds of event time without an event (a timer
    deletes them and writes changelog tombstones); 0: never."""
    session_expiry_interval_s: float = Field(30.0, gt=0)
    """How often the expiry timer runs (each run scans ``session_expiry_batch`` sessions per
    owned partition, going on where the last run stopped)."""
    session_expiry_batch: int = Field(10_000, ge=1)
    """Sessions scanned per partition per expiry run (memory O(this), not O(users))."""
    changelog_compaction_lag_ms: int = Field(86_400_000, ge=0)
    """``max.compaction.lag.ms`` of the session changelog: a deleted or replaced session is
    compacted away within this long (privacy: a forgotten user's old history leaves Kafka)."""
    changelog_delete_retention_ms: int = Field(86_400_000, ge=0)
    """``delete.retention.ms`` of the session changelog: how long tombstones stay readable."""
    max_history: int = Field(50, ge=1, le=1000)
    """Most recent events kept per user in the session table (and used to encode the user)."""
    cold_start_events: int = Field(3, ge=0)
    """A user with at most this many events is flagged ``cold_start: true``."""
    dedupe_capacity: int = Field(100_000, ge=0)
    """Most recent ``(user_id, event_id)`` pairs remembered for de-duplication (per worker,
    in memory; a session also remembers its own events across restarts)."""
    require_key: bool = True
    """Refuse input records without a key (``missing_key``): the key must be the user_id, or
    a user's events land on any partition and their session splits."""
    forget_on_event_topics: bool = False
    """Accept ``"event_type": "forget"`` on ``clicks``/``purchases`` (development only: any
    producer can write those topics; deletion requests belong on ``forget-requests``, which
    only the privacy service may write)."""

    # -- delivery ---------------------------------------------------------------------------
    max_uncommitted_batches: int = Field(4, ge=1, le=64)
    """How many processed micro-batches may wait for delivery and commit while the next one
    is processed (within ``max_uncommitted_events``). At low rates the next small batch is
    answered while the previous ones are still delivered and committed; 1: each batch waits
    for the previous one's commit. The default 4 is the sweep's choice (``coldstream bench
    latency``: lowest p99 at 1,000 and at 5,000 ev/s, reports/bench-latency.json); it was an
    opt-in while a rolling restart under heavy CPU load answered users' events out of input
    order, which 1 did as well: the rebalance ordering finding of docs/reliability.md, fixed
    since, after which the whole fault suite passed with 4."""
    max_uncommitted_events: int = Field(0, ge=0)
    """Most input records processed but not yet committed; 0: ``batch_size``. A micro-batch
    takes no more than this less the records waiting, so a ``kill -9`` repeats at most this
    many events whatever ``max_uncommitted_batches`` is (at flat out, one full batch at a
    time)."""
    idempotent_producer: bool = True
    """Kafka's idempotent producer (``enable.idempotence``, ``acks=all``): a retried send is
    not written twice. The embedded Tansu broker does not support it (the demo turns it off)."""
    max_event_bytes: int = Field(16_384, ge=64)
    """Larger input payloads go to the DLQ as ``oversize``."""
    max_future_skew_s: float = Field(3600.0, ge=0)
    """Event timestamps further than this in the future go to the DLQ as ``ts_future``."""
    max_record_age_s: float = Field(86_400.0, gt=0)
    """A record timestamp (the producer's create time) older than this, like one in the
    future beyond ``max_future_skew_s`` or none at all, is not believed: the event's latency
    is measured from its arrival instead (``coldstream_bad_record_timestamps_total``), so one
    record stamped at 1 ms cannot add 1.8e9 s to the latency histogram."""
    dlq_max_ratio: float = Field(0.5, gt=0, le=1)
    """DLQ circuit breaker: over this share of DLQ'd events in the window, the breaker trips
    (see ``dlq_breaker_action``)."""
    dlq_breaker_action: Literal["alert", "pause", "stop"] = "alert"
    """What a tripped DLQ breaker does. ``alert`` (the default): nothing but say so --
    ``coldstream_dlq_breaker_open`` counts the partitions whose breaker is open, an alert
    fires, one log line per trip -- and every record keeps being answered or dead-lettered at
    full speed (Kafka Streams' log-and-continue, Connect's ``errors.tolerance=all``): a
    hostile producer costs only its own records. ``pause``: pause the partition whose
    records were refused for ``dlq_cooldown_s``, then resume it (its backlog waits in the
    topic, the good records behind the bad ones too: any producer can then delay a
    partition). ``stop``: log a clear message, commit what was answered and exit with code
    3 (for operators who want a crash loop to page them)."""
    dlq_max_bytes: int = Field(131_072, ge=4096, le=900_000)
    """Cap on one ``events-dlq`` record's value: the refused record's key and payload are kept
    up to what fits (``*_truncated`` and the original lengths say so). Below the producer's
    ``max_request_size`` (1,000,000) whatever the input."""
    dlq_window: int = Field(1000, ge=10)
    """Events in the circuit breaker's sliding window (per input partition)."""
    dlq_min_events: int = Field(200, ge=1)
    """The breaker never trips before this many events are in its window."""
    dlq_cooldown_s: float = Field(10.0, ge=0)
    """How long a partition pauses when its breaker trips (``dlq_breaker_action=pause``)."""
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
    NetworkPolicy admits only Prometheus, the kubelet's probes, the API's clients and the
    other workers)."""
    advertised_host: str | None = None
    """Host (or IP) the other workers reach this worker's web server at; it is published to
    the consumer group (Faust's ``canonical_url``: ``http://<host>:<web_port>``) so that a
    ``/recommend`` for a user is forwarded to the owner of the user's partition. A pod sets
    its IP (downward API ``status.podIP``); unset: the bound address, or 127.0.0.1 when
    bound to every interface (one machine only). Must be unique per worker."""
    route_timeout_s: float = Field(0.5, gt=0, le=30)
    """Timeout of a ``/recommend`` forwarded to the owner of the user's partition; past it the
    answer is a local popularity one with ``fallback: "owner_unreachable"``."""
    recommend_max_pending: int = Field(64, ge=1, le=100_000)
    """Most ``/recommend`` requests waiting for a ranking; more are answered from popularity
    with ``fallback: "overloaded"``."""
    recommend_max_rps: float = Field(200.0, gt=0)
    """Budget of ``/recommend`` rankings per second on this worker (a token bucket, bursts up
    to one second's worth). Past it requests are answered from popularity with ``fallback:
    "overloaded"`` at the cost of a dictionary look-up. Requests that wait together are
    ranked in one batch, so the API takes the ranking lock at most once per batch and the
    stream's micro-batches never queue behind hundreds of single-user rankings."""
    api_token_file: Path | None = None
    """A file holding the bearer token ``/recommend`` requires (``Authorization: Bearer
    <token>``; a Kubernetes Secret mounted as a file); unset: no token required (keep the
    NetworkPolicy either way). Workers forward requests with it. ``/metrics``, ``/healthz``
    and ``/ready`` stay open to Prometheus and the kubelet."""
    stall_after_s: float = Field(60.0, gt=0, le=86_400)
    """A partition whose lag is positive while its processed position has not moved for this
    long is *stalled*: ``/ready?partitions=1`` answers 503 and names it,
    ``coldstream_partition_stalled{topic,partition}`` is 1 (alert ColdstreamPartitionStalled)."""
    liveness_after_s: float = Field(120.0, gt=0, le=86_400)
    """``/healthz`` answers 503 (the kubelet restarts the pod) when input has waited this long
    with no batch processed at all while the worker is consuming (tables recovered, flow on):
    its loop is wedged. A stall of one partition while others flow is not a liveness failure."""
    health_interval_s: float = Field(5.0, gt=0, le=600)
    """How often the worker asks the broker for the end offsets of its partitions (the lag
    behind stall detection and liveness)."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "warning"
    """Worker log level (case does not matter)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @property
    def effective_session_store(self) -> str:
        """``memory`` or ``rocksdb`` (the profile's when ``auto``)."""
        if self.session_store != "auto":
            return self.session_store
        return "rocksdb" if self.profile == "prod" else "memory"

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
