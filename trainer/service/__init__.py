"""The long-running trainer process (production): the consume -> cycle -> gate -> publish
loop (:mod:`.loop`), one re-distillation cycle (:mod:`.redistill`), the first model of an
empty store (:mod:`.bootstrap`), the replay buffer (:mod:`.buffer`), the holdout gate
(:mod:`.gate`), the key holder's store commands (:mod:`.promote`) and its metrics
(:mod:`.telemetry`).

Never imports :mod:`trainer.evaluation` (an import-linter contract).
"""
