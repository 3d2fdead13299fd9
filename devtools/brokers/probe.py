"""Ports and the wire-level readiness probe of the local brokers.

Readiness means: the port accepts and a Kafka Metadata (v1) request, sent over a raw
socket (TLS optional, unauthenticated), lists at least one broker. Standard library only.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

from devtools.waiting import log_tail, wait_until

__all__ = [
    "LOOPBACK",
    "BrokerError",
    "free_port",
    "metadata_brokers",
    "port_is_free",
    "wait_for_kafka",
]

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    """A broker could not be found, started or stopped."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def metadata_brokers(
    host: str, port: int, *, timeout_s: float = 2.0, tls: bool = False
) -> list[tuple[int, str, int]]:
    """Send a Metadata v1 request (no topics) and return the ``(node_id, host, port)`` list."""
    client_id = b"coldstream-probe"
    body = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        sock: socket.socket = raw
        if tls:  # readiness only: the probe does not authenticate the broker
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw, server_hostname=host)
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        payload = _recv_exact(sock, size)
    correlation_id, n_brokers = struct.unpack_from(">ii", payload, 0)
    if correlation_id != 7:
        raise ConnectionError(f"unexpected correlation id {correlation_id}")
    pos, brokers = 8, []
    for _ in range(n_brokers):
        node_id, host_len = struct.unpack_from(">ih", payload, pos)
        pos += 6
        bhost = payload[pos : pos + host_len].decode()
        pos += host_len
        bport, rack_len = struct.unpack_from(">ih", payload, pos)
        pos += 6 + max(rack_len, 0)
        brokers.append((node_id, bhost, bport))
    return brokers


def wait_for_kafka(
    bootstrap: str,
    *,
    timeout_s: float = 30.0,
    tls: bool = False,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> float:
    """Block until ``bootstrap`` (``host:port``) answers a Metadata request listing a broker
    (tried every 50 ms).

    Returns the seconds waited. Raises :class:`BrokerError` with the tail of ``log_path`` on
    timeout, or as soon as ``proc`` (the broker process, if given) exits.
    """
    host, _, port_s = bootstrap.split(",")[0].rpartition(":")
    port = int(port_s)
    t0 = time.monotonic()

    def exited() -> None:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(
                f"broker process exited with code {proc.returncode} while starting"
                + log_tail(log_path)
            )

    def lists_a_broker() -> bool:
        return bool(metadata_brokers(host, port, tls=tls))

    try:
        wait_until(
            lists_a_broker,
            timeout_s,
            f"a Metadata answer listing a broker from {bootstrap}",
            interval_s=0.05,
            abort=exited,
            ignore=(OSError, ConnectionError, struct.error, UnicodeDecodeError),
        )
    except TimeoutError as e:
        raise BrokerError(f"broker at {bootstrap} not ready: {e}" + log_tail(log_path)) from None
    return time.monotonic() - t0
