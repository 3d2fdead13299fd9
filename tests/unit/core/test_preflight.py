"""Start-up checks: one line, the right error class, before anything is loaded."""

from __future__ import annotations

import socket
import time

import pytest

from coldstream.core.errors import Unavailable, UsageError
from coldstream.core.preflight import check_broker, check_device, check_port, tcp_unreachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_taken_port_is_unavailable_and_a_free_one_passes() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(Unavailable) as e:
            check_port("127.0.0.1", port, what="web", env="COLDSTREAM_WEB_PORT", flag="--web-port")
    assert str(e.value) == (
        f"web port {port} on 127.0.0.1 is in use: stop what holds it or choose another port "
        f"(env COLDSTREAM_WEB_PORT, flag --web-port)"
    )
    assert e.value.exit_code == 6
    check_port("127.0.0.1", port, what="web")  # released: free again


def test_tcp_unreachable_says_what_failed_per_server() -> None:
    port = _closed_port()
    assert tcp_unreachable(f"127.0.0.1:{port}") == f"127.0.0.1:{port} refused the connection"
    assert "is not host:port" in (tcp_unreachable("nohostport") or "")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = listening.getsockname()[1]
        assert tcp_unreachable(f"127.0.0.1:{port},127.0.0.1:{up}") is None  # one answers


def test_check_broker_waits_then_names_the_setting() -> None:
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as e:
        check_broker(f"127.0.0.1:{port}", ["clicks"], wait_s=1.5)
    assert time.monotonic() - t0 >= 1.4  # it retried until the wait was over
    msg = str(e.value)
    assert msg.startswith(f"no broker answers at 127.0.0.1:{port} (waited 2 s, COLDSTREAM_BROKER")
    assert "env COLDSTREAM_BOOTSTRAP / flag --bootstrap" in msg


def test_check_device_refuses_bad_strings_and_missing_gpus() -> None:
    assert str(check_device("cpu")) == "cpu"
    with pytest.raises(UsageError, match=r"^device 'gpu': not a torch device; use auto, cpu"):
        check_device("gpu")
    with pytest.raises(UsageError, match=r"cuda:99"):
        check_device("cuda:99")
