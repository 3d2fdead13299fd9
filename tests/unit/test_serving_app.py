"""The Faust app and settings: consumer tuning, session timeouts, the serving import rule."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream_app.app import create_app
from stream_app.settings import Settings, settings_table

pytestmark = pytest.mark.unit


async def test_worker_consumer_uses_configured_fetch_wait():
    app = create_app(Settings(bootstrap="127.0.0.1:1", fetch_max_wait_ms=7, app_id="t-fetch"))
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 7  # Faust alone would set 1500
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
    rows = settings_table()
    assert len(rows) >= 20
    for name, env, _default, doc in rows:
        assert env == "COLDSTREAM_" + name.upper()
        assert doc, f"setting {name} lacks a docstring"


def test_unwired_options_refused():
    with pytest.raises(NotImplementedError):  # SSL is wired (tests/integration/test_tls.py)
        create_app(Settings(security_protocol="SASL_SSL"))
    with pytest.raises(NotImplementedError):
        create_app(Settings(processing_guarantee="exactly_once"))


def test_serving_path_never_imports_transformers():
    code = ("import sys, stream_app.worker, stream_app.agents, stream_app.web, stream_app.recommender; "
            "import stream_app.commands; assert 'transformers' not in sys.modules, 'transformers imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
