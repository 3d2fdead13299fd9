"""The kernel: contracts shared by the serving worker and the trainer.

Imports no other coldstream layer (``stream_app``, ``trainer``, ``devtools``,
``coldstream.cli``): an import-linter contract in ``pyproject.toml`` keeps it so. Modules:

==================  =====================================================================
``errors``          one error root; :class:`~coldstream.core.errors.Refused` (reason code)
``events``          input event schema and validation (``validate_event``), event types
``records``         builders of every record the system writes (recommendations, DLQ, events)
``topics``          ``kafka/topics.yaml`` loaded and validated; topic creation
``security``        broker security options (TLS, SASL) for every Kafka client
``settings``        the settings block both processes share (broker, topics, store, security)
``model_updates``   signed ``model-updates`` records: signing and verification
``student``         the student model, its config, history packing
``checkpoint``      the model store: save, verify, load (safetensors only)
``device``          device selection, done once per process
==================  =====================================================================
"""
