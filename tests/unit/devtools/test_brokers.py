"""The local brokers without a real broker: the KRaft cluster id, the readiness probe, and
start-up failures (stand-in ``java`` / ``tansu`` executables): every failure carries the
failed tool's own output."""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from pathlib import Path

import pytest

from devtools.brokers import BrokerError, KafkaBroker, TansuBroker, free_port, wait_for_kafka
from devtools.brokers.kafka import cluster_id
from devtools.brokers.probe import port_is_free


def test_cluster_id_never_starts_with_a_dash() -> None:
    # about 1 raw id in 64 starts with "-": 5,000 draws would all but surely show one
    ids = [cluster_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def jars(tmp_path: Path) -> Path:
    d = tmp_path / "jars"
    d.mkdir()
    (d / "kafka_2.13-3.9.0.jar").write_bytes(b"")  # find_kafka_jars only looks for the name
    return d


def test_storage_tool_failure_carries_its_output(tmp_path: Path, jars: Path) -> None:
    java = _script(tmp_path / "java", 'echo "StorageTool: log.dirs is not writable" >&2\nexit 3\n')
    broker = KafkaBroker(tmp_path / "log", jars=jars, java=str(java))
    with pytest.raises(BrokerError) as info:
        broker.start()
    msg = str(info.value)
    assert "kafka StorageTool format failed (3)" in msg
    assert "StorageTool: log.dirs is not writable" in msg
    assert not broker.running


def test_server_failure_carries_the_tail_of_its_log(tmp_path: Path, jars: Path) -> None:
    java = _script(
        tmp_path / "java",
        'case "$*" in\n'
        "  *kafka.tools.StorageTool*) echo formatted; exit 0;;\n"
        '  *) echo "FATAL server: controller quorum unreachable"; exit 1;;\n'
        "esac\n",
    )
    broker = KafkaBroker(tmp_path / "log", jars=jars, java=str(java), startup_timeout_s=30)
    t0 = time.monotonic()
    with pytest.raises(BrokerError) as info:
        broker.start()
    msg = str(info.value)
    assert "broker process exited with code 1 while starting" in msg
    assert f"lines of {tmp_path / 'log' / 'broker.log'}" in msg
    assert "FATAL server: controller quorum unreachable" in msg
    assert time.monotonic() - t0 < 20  # the exit is noticed at once, not at the timeout
    assert not broker.running and broker.pid is None


def test_a_missing_java_is_a_broker_error(tmp_path: Path, jars: Path) -> None:
    broker = KafkaBroker(tmp_path / "log", jars=jars, java=str(tmp_path / "no-such-java"))
    with pytest.raises(BrokerError, match="could not run .*no-such-java"):
        broker.start()


def test_tansu_failure_carries_its_log_and_removes_it(tmp_path: Path) -> None:
    tansu = _script(
        tmp_path / "tansu", 'echo "tansu: Address already in use (os error 98)"\nexit 2\n'
    )
    broker = TansuBroker(binary=tansu, startup_timeout_s=30)
    with pytest.raises(BrokerError) as info:
        broker.start()
    assert "broker process exited with code 2 while starting" in str(info.value)
    assert "Address already in use (os error 98)" in str(info.value)
    assert broker.log_path is None and not broker.running  # its temp log is gone


def test_a_start_that_times_out_stops_the_process(tmp_path: Path) -> None:
    """A stand-in that never answers Metadata: the start times out and the process is killed."""
    tansu = _script(tmp_path / "tansu", 'echo "listening (not really) as $$"\nexec sleep 60\n')
    broker = TansuBroker(binary=tansu, startup_timeout_s=0.5, log_path=tmp_path / "t.log")
    with pytest.raises(
        BrokerError, match=r"(?s)not ready: timed out after 0\.5 s.*listening \(not really\)"
    ):
        broker.start()
    assert not broker.running and (tmp_path / "t.log").exists()  # a given log is kept
    pid = int((tmp_path / "t.log").read_text().split()[-1])
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_probe_timeout_names_the_bootstrap_and_the_last_error() -> None:
    port = free_port()
    with pytest.raises(
        BrokerError, match=rf"broker at 127\.0\.0\.1:{port} not ready: .*ConnectionRefusedError"
    ):
        wait_for_kafka(f"127.0.0.1:{port}", timeout_s=0.2)


def test_free_port_is_free() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not port_is_free(port)
