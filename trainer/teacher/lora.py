"""LoRA fine-tuning of the teacher's encoder itself (``peft``), contrastive on history -> next item.

The frozen-encoder teacher (:mod:`trainer.teacher.adapt`) trains two small towers on top of stock
vectors; here the encoder's attention projections get low-rank adapters (LoRA, Hu et al.,
2021: ``W x + (alpha / r) B A x`` on the query, key and value maps of every layer; BERT's
``query/key/value``, MPNet's ``q/k/v``), so the encoder itself learns what a viewing history
says about the next item.

* **Asymmetric.** Only the history (query) side runs through the adapters; item vectors stay
  the stock encoder's (:meth:`trainer.teacher.encoder.Teacher.encode_items` encodes with the adapter
  disabled). New items are therefore embedded by the stock weights, cached item vectors stay
  valid, and the student's text inputs do not change with the adapter.
* **Loss.** Multi-positive InfoNCE: a history's positives are its next items (up to 10, as for
  the towers); its negatives are the other histories' positives in the batch (in-batch
  negatives; shared items are positives, never negatives) plus ``hard`` negatives per history
  (the items a frozen teacher ranks highest that are not positives). Logits are
  ``scale * cos(enc_lora(history), item)`` with a learned scale.
* **Early stopping** on ``validate(teacher)`` (validation users only) after every epoch; the
  best adapter is kept. An epoch visits at most ``max_examples`` histories (the encoder's
  backward pass dominates on CPU).

An adapter is saved as one safetensors file (:func:`save_adapter`: the LoRA tensors, with the
LoRA configuration and the base encoder's name in the metadata) and loaded onto a fresh
teacher with :func:`load_adapter`; :mod:`trainer.teacher.heads` keeps it beside the heads.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ATTENTION_PROJECTIONS = ("query", "key", "value", "q", "k", "v")
"""Leaf names of attention projections (BERT/RoBERTa/MiniLM: query/key/value; MPNet: q/k/v)."""


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    hard: int = 16
    """Hard negatives per history."""
    scale: float = 20.0
    """Initial logit scale (1 / temperature), then learned."""
    patience: int = 1
    max_examples: int = 3072
    """Histories per epoch (a fresh random subsample each epoch)."""
    seed: int = 0


def lora_targets(model: torch.nn.Module) -> list[str]:
    """Names of the attention projections of ``model`` (``nn.Linear`` leaves, see
    :data:`ATTENTION_PROJECTIONS`)."""
    out = [
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in ATTENTION_PROJECTIONS
    ]
    if not out:
        raise ValueError(
            f"{type(model).__name__} has no attention projections named {ATTENTION_PROJECTIONS}"
        )
    return out


def base_name(teacher: Any) -> str:
    """The base encoder an adapter belongs to: ``<folder name>:<model type>``."""
    return f"{teacher.path.name}:{teacher.model.config.model_type}"


def attach_lora(teacher: Any, config: LoraConfig | None = None) -> None:
    """Wrap ``teacher.model`` in fresh (zero-effect) LoRA adapters; only they train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = config or LoraConfig()
    if teacher.adapter is not None:
        raise ValueError("the teacher already has an adapter")
    torch.manual_seed(cfg.seed)
    leaves = sorted({n.split(".")[-1] for n in lora_targets(teacher.model)})
    pcfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=leaves, bias="none"
    )
    teacher.model = get_peft_model(teacher.model, pcfg)
    teacher.adapter = {"kind": "lora", "r": cfg.r, "alpha": cfg.alpha, "targets": leaves}


def detach_lora(teacher: Any) -> None:
    """Remove the adapter: the teacher is the stock encoder again."""
    if teacher.adapter is not None:
        teacher.model = teacher.model.unload()
        teacher.adapter = None


def adapter_state(teacher: Any) -> dict[str, torch.Tensor]:
    """The LoRA tensors of an adapted teacher (CPU copies)."""
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(teacher.model).items()
    }


def set_adapter_state(teacher: Any, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(teacher.model, state)


def _pad(rows: Sequence[np.ndarray], width: int) -> torch.Tensor:
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.int64)[:width]
        out[i, : len(r)] = torch.as_tensor(r)
    return out


def contrastive_loss(
    u: torch.Tensor,
    item_vecs: torch.Tensor,
    positives: torch.Tensor,
    hard: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """Multi-positive InfoNCE of users ``u [B, D]`` (unit) over the batch's candidates: every
    positive of the batch (``positives [B, P]``, -1 padded) and the hard negatives (``hard
    [B, H]``, -1 padded). A candidate that is one of a user's positives counts as positive for
    that user (uniform target over its positives), never as a negative."""
    cand = torch.unique(torch.cat([positives[positives >= 0], hard[hard >= 0]]))
    logits = scale * u @ item_vecs[cand].T  # [B, C]
    is_pos = (positives.unsqueeze(-1) == cand.view(1, 1, -1)).any(1)  # [B, C]
    y = is_pos.float() / is_pos.sum(-1, keepdim=True).clamp(min=1)
    keep = is_pos.any(-1)
    return -(y * F.log_softmax(logits, -1)).sum(-1)[keep].mean()


def fit_lora(
    teacher: Any,
    texts: Sequence[str],
    positives: Sequence[np.ndarray],
    item_vecs: np.ndarray,
    hard: np.ndarray | None = None,
    *,
    config: LoraConfig | None = None,
    validate: Callable[[Any], float] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Attach LoRA to ``teacher`` and train it: history ``texts[i]`` against its next items
    ``positives[i]`` (rows of ``item_vecs``, the stock item vectors), with in-batch and
    ``hard[i]`` negatives. Early stopping on ``validate(teacher)`` (higher is better; epoch 0
    is the untrained adapter = the frozen encoder). The best adapter is left on the teacher;
    returns the curve."""
    cfg = config or LoraConfig()
    attach_lora(teacher, cfg)
    rng = np.random.default_rng(cfg.seed)
    model = teacher.model
    log_scale = torch.nn.Parameter(torch.tensor(math.log(cfg.scale)))
    params = [p for p in model.parameters() if p.requires_grad] + [log_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    V = torch.as_tensor(item_vecs, dtype=torch.float32, device=teacher.device)
    pos = _pad(positives, 10).to(teacher.device)
    neg = (
        _pad(list(hard[:, : cfg.hard]), cfg.hard)
        if hard is not None and cfg.hard > 0
        else torch.full((len(texts), 1), -1, dtype=torch.long)
    ).to(teacher.device)
    curve: list[dict] = []
    best = validate(teacher) if validate is not None else -float("inf")
    curve.append({"epoch": 0, "loss": None, "val": best})
    best_state, bad = adapter_state(teacher), 0
    from tqdm import tqdm

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(texts))[: cfg.max_examples]
        tot, steps = 0.0, 0
        bar = tqdm(
            range(0, len(order), cfg.batch_size),
            desc=f"lora {teacher.path.name} epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not progress,
        )
        for s in bar:
            b = order[s : s + cfg.batch_size]
            u = teacher.forward([texts[i] for i in b])
            bt = torch.as_tensor(b, device=teacher.device)
            loss = contrastive_loss(u, V, pos[bt], neg[bt], log_scale.exp())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            tot, steps = tot + loss.item(), steps + 1
            bar.set_postfix(loss=f"{tot / steps:.3f}")
        model.eval()
        val = validate(teacher) if validate is not None else -tot / max(steps, 1)
        curve.append({"epoch": epoch, "loss": tot / max(steps, 1), "val": val})
        if progress:
            print(
                f"[lora] {teacher.path.name} epoch {epoch}: loss {tot / max(steps, 1):.4f} val {val:.4f}",
                flush=True,
            )
        if val > best:
            best, best_state, bad = val, adapter_state(teacher), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    set_adapter_state(teacher, best_state)
    model.eval()
    return curve


def save_adapter(path: Path | str, teacher: Any) -> Path:
    """The teacher's LoRA adapter as one safetensors file (atomically): its tensors, with the
    LoRA configuration and the base encoder (name, width) in the metadata."""
    from safetensors.torch import save_file

    if teacher.adapter is None:
        raise ValueError("the teacher has no adapter to save")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    os.close(fd)
    meta = {
        "adapter": json.dumps(teacher.adapter),
        "base": base_name(teacher),
        "dim": str(teacher.dim),
    }
    save_file({k: v.contiguous() for k, v in adapter_state(teacher).items()}, tmp, metadata=meta)
    os.replace(tmp, dest)
    return dest


def load_adapter(path: Path | str, teacher: Any) -> dict[str, Any]:
    """Attach the adapter saved at ``path`` to ``teacher`` (a stock teacher of the same base
    encoder: a mismatch raises ``ValueError``); its description."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    if meta.get("base") != base_name(teacher) or int(meta.get("dim", -1)) != teacher.dim:
        raise ValueError(
            f"adapter {path} is for {meta.get('base')} ({meta.get('dim')}-d), "
            f"not {base_name(teacher)} ({teacher.dim}-d)"
        )
    desc = json.loads(meta["adapter"])
    attach_lora(teacher, LoraConfig(r=int(desc["r"]), alpha=int(desc["alpha"]), dropout=0.0))
    set_adapter_state(teacher, state)
    teacher.model.eval()
    return copy.deepcopy(teacher.adapter)


def config_dict(cfg: LoraConfig) -> dict[str, Any]:
    return asdict(cfg)
