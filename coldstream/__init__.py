"""coldstream: a streaming cold-start recommender.

Four layers, each a package (``docs/architecture.md``):

* :mod:`coldstream.core` -- the kernel: contracts that the worker and the trainer agree on
  (events, records, topics, security, signed model updates, the student, checkpoints,
  device selection, errors). It imports neither side.
* :mod:`stream_app` -- serving only (the Faust worker).
* :mod:`trainer` -- training only (teacher, distillation, evaluation, re-distillation).
* :mod:`devtools` -- development tooling (brokers, demo, replay, benchmarks, faults, test
  helpers), installed by the ``dev`` extra only.

:mod:`coldstream.cli` composes them into the ``coldstream`` console script.
"""

from __future__ import annotations

__version__ = "0.2.0"
