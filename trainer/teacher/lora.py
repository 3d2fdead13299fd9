"""LoRA fine-tuning of the teacher's encoder itself (``peft``), contrastive on history -> next item.

The frozen-encoder teacher (:mod:`trainer.teacher.adapt`) trains two small towers on top of stock
vectors; here the encoder's attention projections get low-rank adapters (LoRA, Hu et al.,
2021: ``W x + (alpha / r) B A x`` on the query, key and value maps of the top
:attr:`LoraConfig.layers` layers; BERT's ``query/key/value``, MPNet's ``q/k/v``), so the
encoder itself learns what a viewing history says about the next item. The layers below stay
stock: on the item side their output per item text is computed once (:class:`TopLayers`), so
a step costs the top layers' forward and backward passes only. Two sides
(:attr:`LoraConfig.side`):

* **Item side** (``items``, the default; :func:`fit_lora_items`). The adapter encodes *item*
  texts; a user is the mean of her last items' adapted vectors (then towers over item
  vectors, :func:`item_side_features`). A batch encodes only the items it names (its
  histories, next items and hard negatives: short texts), so an epoch costs O(items touched),
  not O(prefixes x history tokens); no history text is ever encoded, in training or in
  scoring. This is what makes adapting mpnet affordable on CPU. Cold items get adapted
  vectors from their text, like any other.
* **History side** (``history``; :func:`fit_lora`). Only the history (query) side runs through
  the adapters; item vectors stay the stock encoder's
  (:meth:`trainer.teacher.encoder.Teacher.encode_items` encodes with the adapter disabled), so
  cached item vectors and the student's text inputs do not change with the adapter. This is
  the side the production scorer (:mod:`trainer.teacher.heads`) takes.

* **Loss.** Multi-positive InfoNCE: a history's positives are its next items (up to 10, as for
  the towers); its negatives are the other candidates of the batch (in-batch negatives;
  shared items are positives, never negatives) plus ``hard`` negatives per history (the items
  a frozen teacher ranks highest that are not positives). Logits are
  ``scale * cos(user, item)`` with a learned scale.
* **Early stopping** on ``validate(teacher)`` (validation users only) after every epoch; the
  best adapter is kept. An epoch visits at most ``max_examples`` histories (the encoder's
  backward pass dominates on CPU).

An adapter is saved as one safetensors file (:func:`save_adapter`: the LoRA tensors, with the
LoRA configuration, its side and the base encoder's name in the metadata) and loaded onto a
fresh teacher with :func:`load_adapter`; :mod:`trainer.teacher.heads` keeps it beside the heads.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

ATTENTION_PROJECTIONS = ("query", "key", "value", "q", "k", "v")
"""Leaf names of attention projections (BERT/RoBERTa/MiniLM: query/key/value; MPNet: q/k/v)."""


@dataclass
class LoraConfig:
    side: Literal["items", "history"] = "items"
    """``items``: the adapter encodes item texts and a user is the mean of her history's
    adapted item vectors (an epoch costs O(items in the batches): short texts, affordable for
    mpnet on CPU); ``history``: the adapter encodes history texts against stock item vectors
    (an epoch costs O(prefixes x history tokens))."""
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-3
    """(The item side, on MiniLM's validation users of split 0: 5e-4 was still climbing
    steeply after 3 epochs; 2e-3 reaches more in 4.)"""
    weight_decay: float = 0.0
    hard: int = 4
    """Hard negatives per history (each one is a text the item side encodes)."""
    scale: float = 20.0
    """Initial logit scale (1 / temperature), then learned."""
    patience: int = 1
    max_examples: int = 1024
    """Histories per epoch (a fresh random subsample each epoch)."""
    seed: int = 0
    layers: int = 2
    """Adapters on the top ``layers`` encoder layers only (0: every layer). The layers below
    stay stock, so on the item side their output for each item text is computed once and
    cached (:class:`TopLayers`): a step runs and back-propagates through ``layers`` layers
    instead of the whole encoder (mpnet: 2 of 12). Adapters saved before this setting existed
    cover every layer."""


LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")
"""The encoder layer of a module name (``encoder.layer.10.attention.self.query``)."""


def first_adapted_layer(model: torch.nn.Module, layers: int) -> int:
    """The index of the lowest encoder layer that ``layers`` top layers adapt (0: all)."""
    n = int(model.config.num_hidden_layers)
    return n - layers if 0 < layers < n else 0


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
    names = lora_targets(teacher.model)
    leaves = sorted({n.split(".")[-1] for n in names})
    start = first_adapted_layer(teacher.model, cfg.layers)
    targets: list[str] = leaves
    if start > 0:
        targets = [n for n in names if (m := LAYER_INDEX.search(f".{n}")) and int(m[1]) >= start]
    pcfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none"
    )
    teacher.model = get_peft_model(teacher.model, pcfg)
    teacher.adapter = {
        "kind": "lora",
        "side": cfg.side,
        "r": cfg.r,
        "alpha": cfg.alpha,
        "targets": leaves,
        "layers": cfg.layers if start > 0 else 0,
    }


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


def _train(
    teacher: Any,
    cfg: LoraConfig,
    n: int,
    batch_loss: Callable[[np.ndarray, torch.Tensor], torch.Tensor],
    *,
    usable: np.ndarray | None = None,
    validate: Callable[[Any], float] | None,
    progress: bool,
    label: str,
) -> list[dict]:
    """The loop both sides share: attach fresh LoRA to ``teacher``, then per epoch a fresh
    random subsample of the examples ``0..n-1`` (those ``usable``, a bool mask; at most
    ``max_examples``) in batches, ``batch_loss(batch,
    scale)`` minimised (AdamW, gradient norm clipped at 1, a learned logit scale), early
    stopping on ``validate(teacher)`` (higher is better; epoch 0 is the untrained adapter = the
    stock encoder). The best adapter is left on the teacher; returns the curve."""
    attach_lora(teacher, cfg)
    rng = np.random.default_rng(cfg.seed)
    model = teacher.model
    log_scale = torch.nn.Parameter(torch.tensor(math.log(cfg.scale)))
    params = [p for p in model.parameters() if p.requires_grad] + [log_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    curve: list[dict] = []
    best = validate(teacher) if validate is not None else -float("inf")
    curve.append({"epoch": 0, "loss": None, "val": best})
    best_state, bad = adapter_state(teacher), 0
    from tqdm import tqdm

    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = rng.permutation(n)
        order = (perm if usable is None else perm[usable[perm]])[: cfg.max_examples]
        tot, steps = 0.0, 0
        bar = tqdm(
            range(0, len(order), cfg.batch_size),
            desc=f"{label} {teacher.path.name} epoch {epoch}",
            unit="batch",
            leave=False,
            disable=not progress,
        )
        for s in bar:
            loss = batch_loss(order[s : s + cfg.batch_size], log_scale.exp())
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
                f"[{label}] {teacher.path.name} epoch {epoch}: loss {tot / max(steps, 1):.4f} "
                f"val {val:.4f}",
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
    """Attach LoRA to ``teacher`` and train it on the history side: history ``texts[i]``
    against its next items ``positives[i]`` (rows of ``item_vecs``, the stock item vectors),
    with in-batch and ``hard[i]`` negatives (:func:`contrastive_loss`; the loop:
    :func:`_train`). Returns the curve."""
    cfg = replace(config or LoraConfig(), side="history")
    V = torch.as_tensor(item_vecs, dtype=torch.float32, device=teacher.device)
    pos = _pad(positives, 10).to(teacher.device)
    neg = (
        _pad(list(hard[:, : cfg.hard]), cfg.hard)
        if hard is not None and cfg.hard > 0
        else torch.full((len(texts), 1), -1, dtype=torch.long)
    ).to(teacher.device)

    def batch_loss(b: np.ndarray, scale: torch.Tensor) -> torch.Tensor:
        u = teacher.forward([texts[i] for i in b])
        bt = torch.as_tensor(np.asarray(b), device=teacher.device)
        return contrastive_loss(u, V, pos[bt], neg[bt], scale)

    return _train(
        teacher,
        cfg,
        len(texts),
        batch_loss,
        validate=validate,
        progress=progress,
        label="lora",
    )


def recent_mean(item_vecs: torch.Tensor, history: Sequence[int], window: int) -> torch.Tensor:
    """The mean of the last ``window`` rows of ``item_vecs`` named by ``history`` (zeros if
    empty)."""
    h = list(history)[-window:]
    if not h:
        return item_vecs.new_zeros(item_vecs.shape[1])
    return item_vecs[torch.as_tensor(h, dtype=torch.long, device=item_vecs.device)].mean(0)


def item_side_features(
    item_vecs: np.ndarray, histories: Sequence[np.ndarray], window: int
) -> np.ndarray:
    """``[B, 2D]`` user features from item vectors alone: the unit mean of the last
    ``window`` history items, then the unit mean of the whole history (zeros if empty). The
    first half is the untrained user (:func:`trainer.teacher.adapt.zero_shot_logits`)."""
    d = item_vecs.shape[1]
    out = np.zeros((len(histories), 2 * d), dtype=np.float32)
    for b, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)
        if len(h):
            out[b, :d] = item_vecs[h[-window:]].mean(0)
            out[b, d:] = item_vecs[h].mean(0)
    for half in (slice(0, d), slice(d, 2 * d)):
        out[:, half] /= np.maximum(np.linalg.norm(out[:, half], axis=1, keepdims=True), 1e-12)
    return out


def _base(model: torch.nn.Module) -> Any:
    """The transformers model under a ``peft`` wrapper (the adapters live in its layers)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


class TopLayers:
    """Item texts through the top layers of the teacher's encoder, from cached inputs.

    The layers below ``start`` are stock and frozen (the adapter covers only the top ones), so
    the hidden states entering layer ``start`` are computed once per text (no gradients, the
    stock encoder, length-sorted batches) and kept unpadded (``O(items x tokens x width)``:
    mpnet, 1,682 MovieLens titles, ~100 MB). :meth:`forward` runs the top layers on a batch of
    them, with gradients and whatever adapter the teacher carries, then mean-pools and
    normalises as :meth:`trainer.teacher.encoder.Teacher.forward` does; in eval mode both
    give the same vectors. BERT-like encoders (MiniLM) and MPNet (its relative position bias)
    are supported."""

    def __init__(self, teacher: Any, texts: Sequence[str], start: int) -> None:
        if start <= 0:
            raise ValueError("TopLayers needs a first adapted layer above the embeddings")
        self.teacher, self.start = teacher, start
        self.states: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        base = _base(teacher.model)
        was = base.training
        base.eval()
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.no_grad(), teacher.stock():
            for s in range(0, len(texts), teacher.batch_size):
                rows = order[s : s + teacher.batch_size]
                enc = teacher.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=teacher.max_tokens,
                    return_tensors="pt",
                ).to(teacher.device)
                hs = base(**enc, output_hidden_states=True).hidden_states[start]
                lens = enc["attention_mask"].sum(1).tolist()
                for r, i in enumerate(rows):
                    self.states[int(i)] = hs[r, : int(lens[r])].clone()
        base.train(was)

    def forward(self, ids: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Unit vectors ``[len(ids), D]`` of the items ``ids``, with gradients."""
        from transformers.masking_utils import create_bidirectional_mask

        rows = [self.states[int(i)] for i in ids]
        width = max(len(r) for r in rows)
        d = rows[0].shape[1]
        h = rows[0].new_zeros((len(rows), width, d))
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=h.device)
        for b, r in enumerate(rows):
            h[b, : len(r)] = r
            mask[b, : len(r)] = 1
        base = _base(self.teacher.model)
        am = create_bidirectional_mask(config=base.config, inputs_embeds=h, attention_mask=mask)
        enc = base.encoder
        extra = (
            {"position_bias": enc.compute_position_bias(h)}
            if hasattr(enc, "compute_position_bias")
            else {}
        )
        for layer in enc.layer[self.start :]:
            out = layer(h, am, **extra)
            h = out[0] if isinstance(out, tuple) else out
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, batch_size: int = 256) -> np.ndarray:
        """Every item's vector, ``[N, D]`` float32 (eval mode)."""
        model = self.teacher.model
        was = model.training
        model.eval()
        n = len(self.states)
        out = np.zeros((n, self.teacher.dim), dtype=np.float32)
        order = np.argsort([len(s) for s in self.states], kind="stable")
        for s in range(0, n, batch_size):
            rows = order[s : s + batch_size]
            out[rows] = self.forward(rows).float().cpu().numpy()
        model.train(was)
        return out


def top_layers(teacher: Any, texts: Sequence[str], layers: int) -> TopLayers | None:
    """The teacher's :class:`TopLayers` for ``texts`` above the stock bottom that ``layers``
    top adapted layers leave (``None`` when every layer is adapted); kept on the teacher
    (``teacher.bottom_cache``) by the texts and the first adapted layer, since the stock
    bottom does not change with the adapter."""
    start = first_adapted_layer(_base(teacher.model), layers)
    if start == 0:
        return None
    key = (hash(tuple(texts)), len(texts), start)
    cache = teacher.__dict__.setdefault("bottom_cache", {})
    if key not in cache:
        cache.clear()  # one catalogue at a time
        cache[key] = TopLayers(teacher, texts, start)
    return cache[key]


def item_vectors(teacher: Any, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """The (adapted) teacher's unit vectors of item ``texts``, ``[N, D]``: through the cached
    stock bottom (:func:`top_layers`) when its adapter covers only the top layers, else a
    full :meth:`~trainer.teacher.encoder.Teacher.encode`. The same vectors either way."""
    layers = int((teacher.adapter or {}).get("layers", 0))
    top = top_layers(teacher, texts, layers) if teacher.adapter is not None else None
    if top is None:
        return teacher.encode(texts, progress=progress)
    return top.encode()


def item_side_loss(
    encode: Callable[[np.ndarray], torch.Tensor],
    histories: Sequence[np.ndarray],
    positives: Sequence[np.ndarray],
    hard: Sequence[np.ndarray],
    scale: torch.Tensor,
    window: int,
) -> torch.Tensor:
    """Multi-positive InfoNCE of one batch, every vector through the (adapted) encoder
    (``encode(item ids)`` -> unit vectors with gradients): the
    items the batch names (histories, positives, hard negatives) are encoded once; a user is
    the unit mean of her last ``window`` history vectors; her candidates are all of the
    batch's items except her own history (revealed items are never ranked); her positives,
    a uniform target."""
    items = np.unique(np.concatenate([*histories, *positives, *hard]).astype(np.int64))
    row = {int(i): r for r, i in enumerate(items)}
    vecs = encode(items)  # [U, D], unit
    u = F.normalize(
        torch.stack([recent_mean(vecs, [row[int(i)] for i in h], window) for h in histories]),
        dim=-1,
    )
    logits = scale * u @ vecs.T  # [B, U]
    pos = torch.zeros_like(logits, dtype=torch.bool)
    seen = torch.zeros_like(pos)
    for b, (h, p) in enumerate(zip(histories, positives, strict=True)):
        seen[b, [row[int(i)] for i in h]] = True
        pos[b, [row[int(i)] for i in p]] = True
    pos &= ~seen
    logits = logits.masked_fill(seen, float("-inf"))
    y = pos.float() / pos.sum(-1, keepdim=True).clamp(min=1)
    keep = pos.any(-1)
    logp = F.log_softmax(logits, -1).masked_fill(seen, 0.0)
    return -(y * logp).sum(-1)[keep].mean()


def fit_lora_items(
    teacher: Any,
    item_texts: Sequence[str],
    histories: Sequence[np.ndarray],
    positives: Sequence[np.ndarray],
    hard: np.ndarray | None = None,
    *,
    window: int = 5,
    config: LoraConfig | None = None,
    validate: Callable[[Any], float] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Attach LoRA to ``teacher`` and train it on the item side: a training prefix is its
    history ``histories[i]`` (item ids) and its next items ``positives[i]``; the loss is
    :func:`item_side_loss` (in-batch and ``hard[i]`` negatives; the loop: :func:`_train`;
    prefixes without a history or a next item are skipped). Returns the curve."""
    cfg = replace(config or LoraConfig(), side="items")
    hist = [np.asarray(h, dtype=np.int64)[-window:] for h in histories]
    pos = [np.asarray(p, dtype=np.int64)[:10] for p in positives]
    neg = [
        np.asarray(hard[i, : cfg.hard], dtype=np.int64)
        if hard is not None and cfg.hard > 0
        else np.zeros(0, np.int64)
        for i in range(len(hist))
    ]

    top = top_layers(teacher, item_texts, cfg.layers)

    def encode(ids: np.ndarray) -> torch.Tensor:
        if top is None:
            return teacher.forward([item_texts[i] for i in ids])
        return top.forward(ids)

    def batch_loss(b: np.ndarray, scale: torch.Tensor) -> torch.Tensor:
        return item_side_loss(
            encode,
            [hist[i] for i in b],
            [pos[i] for i in b],
            [neg[i] for i in b],
            scale,
            window,
        )

    return _train(
        teacher,
        cfg,
        len(hist),
        batch_loss,
        usable=np.array([len(h) > 0 and len(p) > 0 for h, p in zip(hist, pos, strict=True)]),
        validate=validate,
        progress=progress,
        label="lora items",
    )


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
    side = desc.get("side", "history")  # adapters saved before item-side LoRA: history side
    attach_lora(
        teacher,
        LoraConfig(
            side=side,
            r=int(desc["r"]),
            alpha=int(desc["alpha"]),
            dropout=0.0,
            layers=int(desc.get("layers", 0)),  # saved before the setting: every layer
        ),
    )
    set_adapter_state(teacher, state)
    teacher.model.eval()
    return copy.deepcopy(teacher.adapter)


def config_dict(cfg: LoraConfig) -> dict[str, Any]:
    return asdict(cfg)
