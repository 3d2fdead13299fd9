"""Development tooling: brokers, demo, replay, benchmarks, fault scenarios, test helpers.

Installed by the ``dev`` extra only; no image copies it, and neither :mod:`stream_app` nor
:mod:`trainer` imports it (import-linter contracts in ``pyproject.toml``).

* :mod:`.commands` -- every dev subcommand's parser (``broker``, ``demo``, ``replay``,
  ``bench ...``, ``evaluate --stream``); each command module is ``add_arguments`` + ``run``;
* :mod:`.brokers` -- local Tansu and Apache Kafka brokers;
* :mod:`.processes` -- the one child-process supervisor, and :class:`~.processes.WorkerProcess`;
* :mod:`.kafka_io` -- the one paced producer, the one read-until consumer, event records;
* :mod:`.waiting` -- the one wait helper;
* :mod:`.checkpoints` -- small random models;
* :mod:`.demo`, :mod:`.replay`, :mod:`.prequential`, :mod:`.bench`, :mod:`.faults` -- the commands.
"""
