"""Fault scenarios: what breaks, and proof that no input event is lost.

One implementation serves two callers: the fault suite (``tests/fault``, small streams) and
``coldstream bench faults`` (larger streams, a table and ``reports/faults.json``).

* :mod:`.inputs` -- good events, hostile payloads, the rejections the validator must make;
* :mod:`.harness` -- broker, topics, model store and workers of one scenario, the feeder
  and the collection of what came back;
* :mod:`.accounting` -- :class:`FaultResult`: lost, duplicated, order and session checks;
* :mod:`.scenarios` -- the scenarios and their registry (:data:`REGISTRY`);
* :mod:`.command` -- ``coldstream bench faults``.

Inputs are matched to outputs by ``event_id`` (recommendations) or by source position
(topic, partition, offset: DLQ records, which also cover payloads without an id).
Workers are subprocesses in their own process groups, always stopped with a deadline.
"""

from __future__ import annotations

from devtools.faults.accounting import FaultResult, Outputs
from devtools.faults.harness import Feeder, Harness
from devtools.faults.inputs import N_ITEMS, Input
from devtools.faults.scenarios import (
    REGISTRY,
    api_flood,
    bad_input,
    broker_restart,
    broker_restart_exactly_once,
    burst,
    delivery_failure,
    delivery_failure_exactly_once,
    dlq_breaker,
    dlq_breaker_pause,
    forged_update,
    forget,
    forget_rebalance,
    fuzz_flood,
    fuzz_records,
    hostile_checkpoint,
    hostile_partition,
    kill9,
    kill9_exactly_once,
    output_too_large,
    rebalance,
    rebalance_exactly_once,
    replayed_update,
    rolling_restart,
    rolling_restart_exactly_once,
    run_scenario,
    sigterm,
    sigterm_exactly_once,
    stalled_partition,
    tansu_restart,
    two_replicas_recommend,
)

__all__ = [
    "N_ITEMS",
    "REGISTRY",
    "FaultResult",
    "Feeder",
    "Harness",
    "Input",
    "Outputs",
    "api_flood",
    "bad_input",
    "broker_restart",
    "broker_restart_exactly_once",
    "burst",
    "delivery_failure",
    "delivery_failure_exactly_once",
    "dlq_breaker",
    "dlq_breaker_pause",
    "forget",
    "forget_rebalance",
    "forged_update",
    "fuzz_flood",
    "fuzz_records",
    "hostile_checkpoint",
    "hostile_partition",
    "kill9",
    "output_too_large",
    "kill9_exactly_once",
    "rebalance",
    "rebalance_exactly_once",
    "replayed_update",
    "rolling_restart",
    "rolling_restart_exactly_once",
    "run_scenario",
    "sigterm",
    "sigterm_exactly_once",
    "stalled_partition",
    "tansu_restart",
    "two_replicas_recommend",
]
