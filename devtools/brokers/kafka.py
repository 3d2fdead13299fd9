"""Apache Kafka: the single-node broker of the integration, fault and benchmark suites.

KRaft mode, broker and controller in one JVM, run from the jars that
``.ci/install-kafka.sh`` resolves into ``kafka/jars/`` (``COLDSTREAM_KAFKA_JARS`` names
another folder when no argument does). Survives restarts when given a persistent
``log_dir``. Start-up failures raise :class:`~devtools.brokers.BrokerError` carrying the
output of the failed step: the StorageTool's output, or the tail of the broker's log.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

from devtools.brokers.probe import LOOPBACK, BrokerError, free_port, port_is_free, wait_for_kafka
from devtools.brokers.process import BrokerProcess

__all__ = [
    "ENV_KAFKA_JARS",
    "KafkaBroker",
    "cluster_id",
    "find_kafka_jars",
    "read_properties",
    "sasl_plain_listeners",
]

ENV_KAFKA_JARS = "COLDSTREAM_KAFKA_JARS"
_REPO = Path(__file__).resolve().parents[2]
_INSTALL_HINT = "fetch them with `.ci/install-kafka.sh` (runs `mvn -f kafka/pom.xml dependency:copy-dependencies`)"


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


def cluster_id() -> str:
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


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, _, v = line.partition("=")
            props[k.strip()] = v.strip()
    return props


def sasl_plain_listeners(
    users: dict[str, str], *, admin_user: bool = False
) -> tuple[dict[str, int], dict[str, str]]:
    """Ports and server properties of a single node with a PLAINTEXT listener (set-up), a
    ``SASL`` listener (SASL_PLAINTEXT, mechanism PLAIN, ``users``: name -> password) and the
    controller: ``({"port", "controller_port", "sasl_port"}, properties)``. ``admin_user``:
    also ``user_admin`` (the broker's own login, for a cluster with an authorizer)."""
    from devtools.brokers.probe import free_port

    port, cport, sport = free_port(), free_port(), free_port()
    while len({port, cport, sport}) < 3:
        cport, sport = free_port(), free_port()
    logins = " ".join(f'user_{u}="{p}"' for u, p in users.items())
    if admin_user:
        logins = f'user_admin="admin-secret" {logins}'
    props = {
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{port},SASL://127.0.0.1:{sport},CONTROLLER://127.0.0.1:{cport}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL://127.0.0.1:{sport}",
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="admin-secret" {logins};'
        ),
    }
    return {"port": port, "controller_port": cport, "sasl_port": sport}, props


class KafkaBroker(BrokerProcess):
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
            previous = read_properties(self.properties_path)

        def prev_port(key: str, name: str) -> int | None:
            for listener in previous.get(key, "").split(","):
                if listener.startswith(f"{name}://"):
                    port = int(listener.rpartition(":")[2])
                    return port if port_is_free(port) else None
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
            f"--cluster-id={cluster_id()}", "-c", str(self.properties_path),
        )  # fmt: skip
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as e:
            raise BrokerError(
                f"kafka StorageTool format timed out after {e.timeout:.0f} s for {self.data_dir}:\n"
                + (_text(e.stdout) + _text(e.stderr))[-4000:]
            ) from None
        except OSError as e:
            raise BrokerError(f"could not run {argv[0]} (kafka StorageTool format): {e}") from e
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
            self.remove_owned_files()  # a temp dir only; the error carries the log's tail
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def restart(self, timeout_s: float = 30.0) -> Self:
        """Clean stop, then start again on the same ports with the same data."""
        self.stop(timeout_s)
        return self.start()

    def remove_owned_files(self) -> None:
        if self._own_dir and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None


def _megabytes(size: str) -> int:
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    s = size.strip().lower()
    if s and s[-1] in units:
        return max(1, int(float(s[:-1]) * units[s[-1]]))
    return max(1, int(s) // (1024 * 1024))


def _text(out: str | bytes | None) -> str:
    if isinstance(out, bytes):
        return out.decode("utf-8", "replace")
    return out or ""


@contextlib.contextmanager
def kafka_bootstrap_for(work: Path) -> Iterator[str]:
    """The benchmarks' Apache Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` when it is set, else a
    private single-node broker under ``work``, stopped on exit."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        yield bootstrap
        return
    broker = KafkaBroker(Path(work) / "kafka")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
