"""Start-up checks of a process, before anything expensive (the model load) happens.

Each check ends the command with one line (:class:`~coldstream.core.errors.UsageError`,
exit 2, or :class:`~coldstream.core.errors.Unavailable`, exit 6) that says what is wrong
and which setting or command fixes it:

* :func:`check_device` -- the torch device string is valid and present;
* :func:`check_port` -- a listen port is free (the worker's web port, the trainer's metrics);
* :func:`check_broker` -- the brokers answer a metadata request (TLS/SASL included) and the
  topics of ``kafka/topics.yaml`` exist (else: ``coldstream topics create``). With
  ``wait_s`` it retries until then (containers started together).
* :func:`idempotence_unsupported`, :func:`transactions_unsupported` -- whether the broker
  gives out producer ids, and whether it runs transactions (the embedded Tansu does neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from coldstream.core.errors import BrokerError, TopicsError, Unavailable, UsageError

__all__ = [
    "broker_topics",
    "check_broker",
    "check_device",
    "check_port",
    "idempotence_unsupported",
    "quiet_kafka_logs",
    "tcp_unreachable",
    "transactions_unsupported",
]


def check_device(setting: str, *, env: str = "COLDSTREAM_DEVICE", flag: str = "--device") -> Any:
    """The ``torch.device`` of ``setting`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``), or a
    :class:`UsageError` naming the setting."""
    from coldstream.core.device import resolve_device

    names = f"env {env}, flag {flag}"
    try:
        device = resolve_device(setting)
    except (RuntimeError, ValueError) as e:
        import torch

        if "no CUDA GPU" in str(e) or (
            setting.startswith("cuda") and not torch.cuda.is_available()
        ):
            why = "torch sees no CUDA GPU on this machine"
        else:
            why = "not a torch device"
        raise UsageError(
            f"device {setting!r}: {why}; use auto, cpu, cuda or cuda:N ({names})"
        ) from None
    if device.type == "cuda" and device.index is not None:
        import torch

        count = torch.cuda.device_count()
        if device.index >= count:
            raise UsageError(
                f"device {setting!r}: torch sees {count} CUDA GPU(s) (cuda:0..cuda:{count - 1}) "
                f"({names})"
            )
    return device


def check_port(
    host: str, port: int, *, what: str, env: str | None = None, flag: str | None = None
) -> None:
    """Raise :class:`Unavailable` when ``host:port`` cannot be bound (in use, or not ours)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds it
        try:
            s.bind((host, port))
        except OSError as e:
            names = ", ".join(
                n for n in (f"env {env}" if env else "", f"flag {flag}" if flag else "") if n
            )
            reason = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e})"
            raise Unavailable(
                f"{what} port {port} on {host} {reason}: stop what holds it or choose "
                f"another port ({names})"
            ) from None


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """aiokafka logs every failed connection attempt; the check reports them once itself."""
    logger = logging.getLogger("aiokafka")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


async def broker_topics(
    bootstrap: str, *, client_kwargs: Mapping[str, Any] | None = None, timeout_s: float = 5.0
) -> set[str]:
    """The topic names on the cluster (one metadata request); raises what aiokafka raises."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="coldstream-preflight",
        request_timeout_ms=int(timeout_s * 1000),
        **dict(client_kwargs or {}),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        return set(await asyncio.wait_for(admin.list_topics(), timeout_s))
    finally:
        await admin.close()


def tcp_unreachable(bootstrap: str, *, timeout_s: float = 3.0) -> str | None:
    """``None`` when at least one ``host:port`` of ``bootstrap`` accepts a TCP connection,
    else what went wrong with each (``127.0.0.1:1 connection refused``)."""
    errors = []
    for server in (x.strip() for x in bootstrap.split(",")):
        if not server:
            continue
        host, _, port = server.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            errors.append(f"{server!r} is not host:port")
            continue
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return None
        except ConnectionRefusedError:
            errors.append(f"{server} refused the connection")
        except socket.gaierror:
            errors.append(f"{server}: unknown host")
        except TimeoutError:
            errors.append(f"{server}: no answer within {timeout_s:.0f} s")
        except OSError as e:
            errors.append(f"{server}: {e.strerror or e}")
    return "; ".join(errors) or "no host:port given"


def check_broker(
    bootstrap: str,
    topics: Iterable[str] = (),
    *,
    client_kwargs: Mapping[str, Any] | None = None,
    wait_s: float = 0.0,
    prefix: str = "",
    timeout_s: float = 5.0,
) -> set[str]:
    """Check that ``bootstrap`` answers and that ``topics`` (physical names) exist; returns
    the cluster's topic names. Retries every second until ``wait_s`` has passed; then raises
    :class:`BrokerError` naming the bootstrap setting, or :class:`TopicsError` naming the
    missing topics and the command that creates them."""
    wanted = list(topics)
    deadline = time.monotonic() + wait_s
    waited = "" if wait_s <= 0 else f" (waited {wait_s:.0f} s, COLDSTREAM_BROKER_WAIT_S)"
    while True:
        problem: str
        error: type[Unavailable] = BrokerError
        unreachable = tcp_unreachable(bootstrap, timeout_s=min(timeout_s, 3.0))
        if unreachable is not None:
            problem = (
                f"no broker answers at {bootstrap}{waited}: {unreachable}; start one or point "
                f"env COLDSTREAM_BOOTSTRAP / flag --bootstrap at it"
            )
            if time.monotonic() >= deadline:
                raise BrokerError(problem)
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            continue
        try:
            with quiet_kafka_logs():
                have = asyncio.run(
                    broker_topics(bootstrap, client_kwargs=client_kwargs, timeout_s=timeout_s)
                )
        except Exception as e:  # noqa: BLE001 - any failure to bootstrap is reported as one line
            detail = str(e) or type(e).__name__
            problem = (
                f"no broker answers at {bootstrap}{waited}: {detail.splitlines()[0][:160]}; "
                f"start one or point env COLDSTREAM_BOOTSTRAP / flag --bootstrap at it"
            )
        else:
            missing = [t for t in wanted if t not in have]
            if not missing:
                return have
            opt = f" --topic-prefix {prefix}" if prefix else ""
            error = TopicsError
            problem = (
                f"topics missing on {bootstrap}{waited}: {', '.join(missing)}; "
                f"create them with: coldstream topics create --bootstrap {bootstrap}{opt}"
            )
        if time.monotonic() >= deadline:
            raise error(problem)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


async def _init_producer_id(
    bootstrap: str, client_kwargs: Mapping[str, Any], timeout_s: float
) -> str | None:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import for_code
    from aiokafka.protocol.transaction import InitProducerIdRequest

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="coldstream-preflight",
        request_timeout_ms=int(timeout_s * 1000),
        **dict(client_kwargs),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        node = client.get_random_node()
        request = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)
        response = await asyncio.wait_for(client.send(node, request), timeout_s)
    finally:
        await client.close()
    code = getattr(response, "error_code", 0)
    if code:
        return f"InitProducerId answered {for_code(code).__name__} [{code}]"
    return None


def idempotence_unsupported(
    bootstrap: str, *, client_kwargs: Mapping[str, Any] | None = None, timeout_s: float = 5.0
) -> str | None:
    """``None`` when the broker gives out producer ids (Kafka's idempotent producer works
    there), else why not. The embedded Tansu broker answers ``InitProducerId`` with an
    error, which an idempotent aiokafka producer turns into a crash (``UnknownError``)."""
    try:
        with quiet_kafka_logs():
            return asyncio.run(_init_producer_id(bootstrap, client_kwargs or {}, timeout_s))
    except Exception as e:  # noqa: BLE001 - any failure means: cannot rely on it
        return (str(e) or type(e).__name__).splitlines()[0][:160]


async def _empty_transaction(
    bootstrap: str, transactional_id: str, client_kwargs: Mapping[str, Any], timeout_s: float
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="coldstream-preflight",
        transactional_id=transactional_id,
        request_timeout_ms=int(timeout_s * 1000),
        **dict(client_kwargs),
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)  # InitProducerId (transactional)
        await asyncio.wait_for(producer.begin_transaction(), timeout_s)
        await asyncio.wait_for(producer.commit_transaction(), timeout_s)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout_s)


def transactions_unsupported(
    bootstrap: str,
    *,
    transactional_id: str,
    client_kwargs: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> str | None:
    """``None`` when the broker runs Kafka transactions (a transactional producer for
    ``transactional_id`` starts, begins and commits an empty transaction), else why not.
    Use an id of the caller's own (one per application, reused: no broker state piles up)."""
    try:
        with quiet_kafka_logs():
            asyncio.run(
                _empty_transaction(bootstrap, transactional_id, client_kwargs or {}, timeout_s)
            )
    except TimeoutError:
        return f"no transactional producer id within {timeout_s:.0f} s"
    except Exception as e:  # noqa: BLE001 - any failure means: cannot rely on it
        return (f"{type(e).__name__}: {e}" if str(e) else type(e).__name__).splitlines()[0][:160]
    return None
