"""Development tooling: brokers, demo, replay, benchmarks, fault scenarios, test helpers.

Installed by the ``dev`` extra only; no image copies it, and neither :mod:`stream_app` nor
:mod:`trainer` imports it (import-linter contracts in ``pyproject.toml``).
"""
