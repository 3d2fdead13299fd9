"""Creates the Faust app (and nothing else): :func:`create_app` from a :class:`Settings`."""

from __future__ import annotations

from typing import Any

import faust
from faust.types.auth import CredentialsT

from stream_app.fastpath import FastPath
from stream_app.sessions import store_url
from stream_app.settings import Settings
from stream_app.transactions import TransactionalOutputs
from stream_app.transport import Transport


class ColdstreamApp(faust.App):
    """A ``faust.App`` with the attributes :mod:`stream_app.transport` reads: the worker
    consumer's ``fetch_max_wait_ms`` and ``fetch_min_bytes`` (from the settings) and the
    ``fast_path`` buffer whose topics bypass Faust's per-message stream machinery (set by
    :func:`stream_app.agents.wire` when ``Settings.fast_path`` is on)."""

    fetch_max_wait_ms: int = 10
    fetch_min_bytes: int = 1
    fast_path: FastPath | None = None
    idempotent_producer: bool = False
    """Kafka's idempotent producer for every send (``Settings.idempotent_producer``)."""
    exactly_once: bool = False
    """``processing_guarantee=exactly_once``: the worker consumer reads ``read_committed``."""
    transactional_outputs: TransactionalOutputs | None = None
    """The fast path's transactional producers under ``exactly_once`` (set by ``wire``)."""

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust credentials for ``settings.security_protocol`` (``None`` for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        # ssl_context not None makes Faust speak SASL_SSL, None SASL_PLAINTEXT
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            ssl_context=settings.ssl_context(),
            mechanism=settings.sasl_mechanism,
        )
    return None


def _table_manager(settings: Settings) -> dict[str, Any]:
    """Faust's ``TableManager`` setting: ours under ``exactly_once`` (fence, then recover
    from committed records: :mod:`stream_app.recovery`), Faust's default otherwise."""
    if settings.processing_guarantee != "exactly_once":
        return {}
    return {"TableManager": "stream_app.recovery:TableManager"}


def create_app(settings: Settings) -> ColdstreamApp:
    session = settings.effective_session_timeout_s
    brokers = ";".join(f"kafka://{h.strip()}" for h in settings.bootstrap.split(",") if h.strip())
    app = ColdstreamApp(
        settings.app_id,
        broker=brokers,
        # Faust hands the credentials to its consumer, producer and admin client
        broker_credentials=broker_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        store=store_url(settings.effective_session_store),
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        # Faust's own exactly-once mode is not used: the fast path runs its own transactions
        # (stream_app.transactions)
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, session / 4),
        broker_rebalance_timeout=max(session, 10.0 if settings.profile == "dev" else 60.0),
        broker_request_timeout=max(30.0, session + 5),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1"
        if settings.web_bind in ("0.0.0.0", "127.0.0.1")
        else settings.web_bind,
        web_enabled=True,
        # Faust's built-in views would let any client of the web port read any user's
        # session (/table/sessions/<user>/) and the cluster layout (/router/): off. The
        # worker serves only its own views (stream_app.web).
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        stream_recovery_delay=0.0,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_max_batch_size=256 * 1024,
        table_standby_replicas=settings.standby_replicas,
        autodiscover=False,
        # exactly_once: fence, then recover from committed records (stream_app.recovery)
        **_table_manager(settings),
    )
    if settings.data_dir is not None:
        app.conf.datadir = settings.data_dir  # a Faust setting (before any store opens)
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.fetch_min_bytes = settings.fetch_min_bytes
    app.idempotent_producer = settings.idempotent_producer
    if settings.processing_guarantee == "exactly_once":
        app.exactly_once = True
    return app
