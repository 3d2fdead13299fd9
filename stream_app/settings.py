"""Serving settings: read once per process, frozen, every field documented with its env var.

The only place in ``stream_app`` that reads the environment. Every field is read from
``COLDSTREAM_<FIELD NAME IN UPPER CASE>`` (e.g. ``COLDSTREAM_BOOTSTRAP``), and every field
has a default, so ``Settings()`` works on a fresh machine. Command-line flags override the
environment by passing keyword arguments: ``Settings(bootstrap="127.0.0.1:9092")``.

``python -m stream_app.settings`` prints the table of settings (name, env var, default).
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.security import check_sasl, kafka_security_kwargs, make_ssl_context

ENV_PREFIX = "COLDSTREAM_"


class Settings(BaseSettings):
    """Settings of one serving worker (and of the serving commands)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    # -- broker & topics ------------------------------------------------------------------
    bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port[,host:port]`` (any Kafka-protocol broker)."""
    topic_prefix: str = ""
    """Prefix prepended verbatim to every topic name of ``kafka/topics.yaml`` (tests use a unique one)."""
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

    # -- security (every aiokafka client of the worker; the trainer reads the same vars) ----
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Broker security protocol. SASL_* need ``sasl_mechanism``, ``sasl_username`` and
    ``sasl_password``; SSL and SASL_SSL verify the broker with ``ssl_cafile``."""
    ssl_cafile: Path | None = None
    """CA bundle (PEM) that verifies the brokers for SSL; unset: the system CAs."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS."""
    ssl_keyfile: Path | None = None
    """Client key (PEM) for mutual TLS (unset: the key is in ``ssl_certfile``)."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism for SASL_PLAINTEXT/SASL_SSL."""
    sasl_username: str | None = None
    """SASL user name (SASL_* only)."""
    sasl_password: SecretStr | None = None
    """SASL password (SASL_* only; never logged)."""

    # -- model ----------------------------------------------------------------------------
    model_store: Path = Path("model-store")
    """Model store root; the worker serves its newest checkpoint (``trainer.store``)."""
    device: str = "auto"
    """Torch device: ``auto`` (cuda when visible, else cpu), ``cpu``, ``cuda``, ``cuda:N``."""
    threads: int = Field(0, ge=0)
    """Torch and FAISS CPU threads; 0 keeps the libraries' defaults."""
    model_hmac_key: SecretStr | None = None
    """Shared secret (HMAC-SHA256) that signs ``model-updates`` records; the trainer reads the
    same env var ``COLDSTREAM_MODEL_HMAC_KEY``. Unset: every update is refused (``unsigned``)."""
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
    web_bind: str = "0.0.0.0"
    """Address the web server binds."""
    log_level: str = "warning"
    """Worker log level."""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.bootstrap.strip():
            raise ValueError("bootstrap must name at least one broker")
        check_sasl(self.security_protocol, self.sasl_mechanism, self.sasl_username, self.sasl_password,
                   env_prefix=ENV_PREFIX)
        return self

    @property
    def effective_session_timeout_s(self) -> float:
        """The session timeout in force (the profile's when unset)."""
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        return 6.0 if self.profile == "dev" else 45.0

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the brokers (``None`` unless the protocol is SSL or SASL_SSL):
        verifies the broker against ``ssl_cafile`` (hostname included), presents
        ``ssl_certfile``/``ssl_keyfile`` when set."""
        return make_ssl_context(self.security_protocol, self.ssl_cafile, self.ssl_certfile,
                                self.ssl_keyfile)

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security arguments for any aiokafka client of this process (producer, consumer,
        admin): ``AIOKafkaConsumer(bootstrap_servers=s.bootstrap, **s.kafka_client_kwargs())``.
        SASL_* add ``sasl_mechanism``, ``sasl_plain_username`` and ``sasl_plain_password``."""
        return kafka_security_kwargs(self.security_protocol, self.ssl_cafile, self.ssl_certfile,
                                     self.ssl_keyfile, self.sasl_mechanism, self.sasl_username,
                                     self.sasl_password)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (``None`` values are ignored), validated again."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self).model_validate(data)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()


def settings_table() -> list[tuple[str, str, str, str]]:
    """``(field, env var, default, description)`` for every setting (docs and ``--help``)."""
    rows = []
    for name, f in Settings.model_fields.items():
        default = f.default
        rows.append((name, ENV_PREFIX + name.upper(), "" if default is None else str(default),
                     " ".join((f.description or "").split())))
    return rows


if __name__ == "__main__":  # pragma: no cover
    for _name, env, default, doc in settings_table():
        print(f"| `{env}` | `{default}` | {doc} |")
