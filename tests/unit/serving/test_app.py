"""The Faust app and settings: consumer tuning, session timeouts, the serving import rule."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from stream_app.app import create_app
from stream_app.settings import Settings, settings_table


async def test_worker_consumer_uses_configured_fetch_wait_and_min_bytes():
    app = create_app(
        Settings(
            bootstrap="127.0.0.1:1", fetch_max_wait_ms=7, fetch_min_bytes=4096, app_id="t-fetch"
        )
    )
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 7  # Faust alone would set 1500
    assert consumer._fetch_min_bytes == 4096  # Faust alone leaves aiokafka's 1
    assert consumer._group_id == "t-fetch"


def test_dev_profile_has_short_session_timeout():
    dev = create_app(Settings(app_id="t-dev"))
    assert dev.conf.broker_session_timeout == 6.0
    assert dev.conf.broker_heartbeat_interval < dev.conf.broker_session_timeout / 3
    prod = create_app(Settings(app_id="t-prod", profile="prod"))
    assert prod.conf.broker_session_timeout == 45.0
    assert create_app(Settings(app_id="t-x", session_timeout_s=9)).conf.broker_session_timeout == 9


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("COLDSTREAM_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("COLDSTREAM_BATCH_SIZE", "64")
    s = Settings()
    assert (s.bootstrap, s.batch_size) == ("kafka-1:9092", 64)
    with pytest.raises((TypeError, ValueError)):  # frozen
        s.k = 5  # type: ignore[misc]
    assert s.with_overrides(k=3, bootstrap=None).k == 3


def test_every_setting_documented():
    rows = settings_table(Settings)
    assert len(rows) >= 20
    for name, env, _default, doc in rows:
        assert env == "COLDSTREAM_" + name.upper()
        assert doc, f"setting {name} lacks a docstring"


async def test_exactly_once_reads_committed_and_recovers_with_our_recovery():
    from stream_app.recovery import Recovery

    s = Settings(bootstrap="127.0.0.1:1", processing_guarantee="exactly_once", app_id="t-eos")
    app = create_app(s)
    assert app.exactly_once and isinstance(app.tables.recovery, Recovery)
    # Faust's own exactly-once mode (its transaction manager) stays off
    assert not app.in_transaction
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._isolation_level == "read_committed"
    # at-least-once: Faust's own classes and isolation, exactly as before
    plain = create_app(Settings(bootstrap="127.0.0.1:1", app_id="t-alo"))
    assert not plain.exactly_once and type(plain.tables.recovery) is not Recovery
    consumer = plain.consumer._thread._create_worker_consumer(plain.transport)
    assert consumer._isolation_level == "read_uncommitted"


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"fast_path": False}, "COLDSTREAM_FAST_PATH=true"),
        ({"session_store": "rocksdb"}, "COLDSTREAM_SESSION_STORE=memory"),
        ({"profile": "prod"}, "COLDSTREAM_SESSION_STORE=memory"),  # prod: rocksdb by default
    ],
)
def test_exactly_once_refused_where_it_would_half_work(changes, names):
    from coldstream.core.errors import UsageError
    from stream_app.worker import check_guarantee

    s = Settings(bootstrap="127.0.0.1:1", processing_guarantee="exactly_once", **changes)
    with pytest.raises(UsageError, match="COLDSTREAM_PROCESSING_GUARANTEE=exactly_once") as e:
        check_guarantee(s)
    assert names in str(e.value) and "\n" not in str(e.value)
    check_guarantee(s.with_overrides(processing_guarantee="at_least_once"))  # no broker asked


def test_serving_path_never_imports_transformers():
    code = (
        "import sys, stream_app.worker, stream_app.agents, stream_app.web, stream_app.recommender; "
        "import stream_app.commands; assert 'transformers' not in sys.modules, 'transformers imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- broker security: SASL --------------------------------------------------------------------


def _sasl(**kw):
    base = dict(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password="alice-secret",
    )
    return Settings(**{**base, **kw})


def test_sasl_plain_kwargs():
    assert _sasl().kafka_client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "alice-secret",
    }
    assert "alice-secret" not in repr(_sasl())  # SecretStr: never in logs
    assert Settings().kafka_client_kwargs() == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_scram_kwargs(mechanism):
    import ssl

    kw = _sasl(security_protocol="SASL_SSL", sasl_mechanism=mechanism).kafka_client_kwargs()
    ctx = kw.pop("ssl_context")
    assert (
        isinstance(ctx, ssl.SSLContext)
        and ctx.verify_mode == ssl.CERT_REQUIRED
        and ctx.check_hostname
    )
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": "alice-secret",
    }


@pytest.mark.parametrize("missing", ["sasl_mechanism", "sasl_username", "sasl_password"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_incomplete_refused(protocol, missing):
    with pytest.raises(ValidationError, match=f"needs {missing}.*COLDSTREAM_{missing.upper()}"):
        _sasl(security_protocol=protocol, **{missing: None})
    with pytest.raises(ValidationError, match="needs"):  # empty is as good as unset
        _sasl(security_protocol=protocol, **{missing: "" if missing != "sasl_mechanism" else None})


def test_sasl_fields_ignored_without_sasl():
    s = Settings(security_protocol="SSL", sasl_username="alice")
    assert set(s.kafka_client_kwargs()) == {"security_protocol", "ssl_context"}


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
async def test_worker_clients_get_sasl(protocol):
    import faust

    app = create_app(
        _sasl(
            bootstrap="127.0.0.1:1",
            app_id="t-sasl",
            security_protocol=protocol,
            sasl_mechanism="SCRAM-SHA-256",
        )
    )
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "alice",
        "alice-secret",
        "SCRAM-SHA-256",
    )
    assert (creds.ssl_context is not None) == (protocol == "SASL_SSL")
    client = app.consumer._thread._create_worker_consumer(app.transport)._client
    assert client._security_protocol == protocol and client._sasl_mechanism == "SCRAM-SHA-256"
    assert (client._sasl_plain_username, client._sasl_plain_password) == ("alice", "alice-secret")


async def test_control_followers_use_security_kwargs(monkeypatch):
    import aiokafka

    from stream_app import control

    seen = {}

    class FakeConsumer:
        def __init__(self, *topics, **kwargs):
            seen.update(kwargs)

        async def start(self):
            raise RuntimeError("stop here")

    async def partitions(bootstrap, topic, **kwargs):
        seen["admin"] = kwargs["client_kwargs"]
        return [0]

    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(control, "topic_partitions", partitions)
    with pytest.raises(RuntimeError, match="stop here"):
        await control.broadcast_consumer(
            "127.0.0.1:1",
            "t",
            from_end=None,
            fetch_max_wait_ms=50,
            client_kwargs=_sasl().kafka_client_kwargs(),
        )
    assert seen["security_protocol"] == "SASL_PLAINTEXT" and seen["sasl_plain_username"] == "alice"
    assert seen["admin"]["sasl_plain_username"] == "alice"  # the metadata lookup is secured too


def test_trainer_reads_the_worker_security_env(monkeypatch):
    from trainer.settings import TrainerSettings

    for k, v in {
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": "alice",
        "SASL_PASSWORD": "alice-secret",
    }.items():
        monkeypatch.setenv("COLDSTREAM_" + k, v)
    worker, trainer = Settings().kafka_client_kwargs(), TrainerSettings().kafka_client_kwargs()
    assert worker.pop("ssl_context") is not None and trainer.pop("ssl_context") is not None
    assert (
        trainer
        == worker
        == {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "alice",
            "sasl_plain_password": "alice-secret",
        }
    )
    monkeypatch.delenv("COLDSTREAM_SASL_PASSWORD")
    with pytest.raises(ValidationError, match="COLDSTREAM_SASL_PASSWORD"):
        TrainerSettings()


def test_faust_built_in_table_and_router_views_are_off():
    # /table/sessions/<user>/ would hand any web client a user's history, /router/ the layout
    app = create_app(Settings())
    served = {str(bp) for _, bp in app.web._enabled_blueprints()}
    assert not {b for b in served if "tables" in b or "router" in b or "stats" in b or "graph" in b}
    assert Settings().web_bind == "127.0.0.1"  # pods set 0.0.0.0 explicitly (settings.env)
