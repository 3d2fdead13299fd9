"""Distillation into the student: examples and training (:mod:`.training`), the losses
(:mod:`.distill`), the steps training and evaluation share (:mod:`.features`) and the public
``fit()`` API (:mod:`.fitting`). Builds on :mod:`trainer.teacher`, :mod:`trainer.data` and
:mod:`trainer.ranking`."""
