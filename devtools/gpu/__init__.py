"""The GPU check: one prepared run that proves the GPU paths and measures them
(``scripts/gpu-check.sh``, ``make gpu-check``), and the payload it needs
(``scripts/gpu-payload.sh``).

* :mod:`.check` -- the runner: set-up, budgets, one child process per part, the summary
  (``gpu-check.json``) and its table;
* :mod:`.parts` -- the measured parts: ``tests``, ``student``, ``search``, ``train``,
  ``finetune``;
* :mod:`.payload` -- what travels to the GPU machine beside the working tree (the faiss-cpu
  wheel, the MiniLM teacher in fp16), planned into calls of at most 64 MiB.

The GPU machine is lent: one H100/H200, 16 cores, Python 3.12 with torch (an older
release than the pinned one), transformers, peft, numpy, pandas, prometheus-client and
pytest; no faust, aiokafka, FAISS, rocksdict, cryptography or Java, nothing installable
from the network. So nothing here imports more at module level than the standard library,
numpy and this repository's modules that do the same; torch, FAISS, pytest, transformers
and peft are imported where a part needs them, and only version-independent torch APIs
are used. ``python -m devtools.gpu check --dry-run`` runs every part with tiny sizes on
the CPU (what CI runs).
"""
