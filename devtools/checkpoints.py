"""Small random models for tests, benchmarks and the demo.

A randomly initialised :class:`~coldstream.core.student.Student` saved with
:func:`coldstream.core.checkpoint.save_checkpoint` is a valid model for everything serving
does (:func:`make_checkpoint`; signed, and the store's pointer moved to it, when given a
:class:`~coldstream.core.signing.Signer`); :func:`random_serving_model` builds a serving
model in memory, without a checkpoint on disk (large indexes for the micro-benchmarks).
:func:`dev_signer` is a key pair made fresh in each process (never written anywhere) and
:func:`verify_env` the environment that makes a worker subprocess trust it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "catalogue_text",
    "make_checkpoint",
    "scale_clusters",
    "point_store",
    "random_serving_model",
    "dev_signer",
    "verify_env",
]

_DEV_SIGNER: Any = None


def dev_signer() -> Any:
    """This process's development key pair (:class:`coldstream.core.signing.Signer`), generated on
    first use and kept in memory only."""
    global _DEV_SIGNER
    if _DEV_SIGNER is None:
        from coldstream.core.signing import Signer

        _DEV_SIGNER = Signer.generate()
    return _DEV_SIGNER


def key_env(folder: Path | str, signer: Any = None) -> dict[str, str]:
    """Write ``signer``'s key pair (default: :func:`dev_signer`) into ``folder`` (once) and
    return the env vars that give a trainer the private key and a worker the public one."""
    signer = signer or dev_signer()
    folder = Path(folder)
    priv, pub = folder / "signing-key.pem", folder / "verify-key.pub"
    if not priv.exists():
        signer.write(folder)
    return {
        "COLDSTREAM_TRAINER_SIGNING_KEY_FILE": str(priv.absolute()),
        "COLDSTREAM_VERIFY_KEYS_FILE": str(pub.absolute()),
    }


def verify_env(signer: Any = None) -> dict[str, str]:
    """``{"COLDSTREAM_VERIFY_KEYS": <public key>}``: a worker with it in its environment
    trusts ``signer`` (default: :func:`dev_signer`)."""
    return {"COLDSTREAM_VERIFY_KEYS": (signer or dev_signer()).public_b64()}


def make_checkpoint(
    root: Path | str,
    *,
    n_items: int = 200,
    dim: int = 32,
    text_dim: int = 32,
    seed: int = 0,
    encoder: str = "gru",
    n_text_only: int = 0,
    titles: list[str] | None = None,
    max_len: int = 50,
    signer: Any = None,
    point: bool = True,
    clusters: int = 0,
) -> Path:
    """Save a random student over items ``"1" .. str(n_items + n_text_only)`` and return its path.

    ``clusters``: the item text vectors form that many topics (:func:`catalogue_text`), as
    learned item embeddings do; 0: isotropic Gaussian text vectors.

    The last ``n_text_only`` items have no id embedding (placed by text alone). ``signer``
    (a :class:`~coldstream.core.signing.Signer`, e.g. :func:`dev_signer`): sign it and,
    with ``point``, move the store's ``CURRENT.json`` to it (sequence number + 1)."""
    import torch

    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.student import Student, StudentConfig

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    total = n_items + n_text_only
    model = Student(
        StudentConfig(
            n_items=n_items,
            text_dim=text_dim,
            dim=dim,
            max_len=max_len,
            encoder=encoder,
            dropout=0.0,
        )
    )
    ids = [str(i + 1) for i in range(total)]
    path = save_checkpoint(
        root,
        model=model,
        item_ids=ids,
        item_text_vecs=catalogue_text(total, text_dim, clusters=clusters, rng=rng),
        item_titles=titles or [f"Item {i}" for i in ids],
        metrics={"note": "random test model"},
        teacher={"name": "none"},
        signer=signer,
    )
    if signer is not None and point:
        point_store(path, signer)
    return path


def point_store(path: Path | str, signer: Any) -> Any:
    """Move the store's ``CURRENT.json`` to the checkpoint at ``path`` (returns the pointer)."""
    from coldstream.core.checkpoint import manifest_sha256
    from coldstream.core.pointer import write_pointer

    path = Path(path)
    return write_pointer(
        path.parent,
        version=int(path.name[1:]),
        manifest_sha256=manifest_sha256(path),
        signer=signer,
    )


def catalogue_text(
    n_items: int,
    text_dim: int,
    *,
    clusters: int = 0,
    spread: float = 0.35,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Random item text vectors ``[n_items, text_dim]`` (float32). ``clusters`` > 0: a
    catalogue of topics (each item = a random topic centre, N(0, I), plus ``spread`` x
    N(0, I); learned item embeddings cluster like this, isotropic noise does not, and an
    approximate index is only as good as that structure); 0: isotropic N(0, I)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if clusters <= 0:
        return rng.standard_normal((n_items, text_dim)).astype(np.float32)
    centres = rng.standard_normal((clusters, text_dim)).astype(np.float32)
    out = np.empty((n_items, text_dim), np.float32)
    step = 1 << 18
    for c0 in range(0, n_items, step):  # bounded temporaries for 1M-item catalogues
        n = min(step, n_items - c0)
        out[c0 : c0 + n] = centres[rng.integers(0, clusters, n)]
        out[c0 : c0 + n] += spread * rng.standard_normal((n, text_dim)).astype(np.float32)
    return out


def scale_clusters(n_items: int) -> int:
    """Topics of the benchmarks' random catalogues: one per 1,000 items, at least 16."""
    return max(16, n_items // 1000)


def scale_checkpoint(store: Path, n_items: int) -> Path:
    """The catalogue-scale benchmarks' model in ``store``: a signed random student (dim 64,
    text 32) over ``n_items`` items in :func:`scale_clusters` topics."""
    return make_checkpoint(
        store,
        n_items=n_items,
        dim=64,
        text_dim=32,
        clusters=scale_clusters(n_items),
        signer=dev_signer(),
    )


def random_serving_model(
    n_items: int,
    dim: int,
    seed: int = 0,
    *,
    clusters: int = 0,
    text_dim: int = 32,
    index: Any = None,
) -> Any:
    """A ``stream_app.recommender.ServingModel`` over ``n_items`` random items without
    writing a checkpoint: a random student whose item vectors are its text projection of
    :func:`catalogue_text` (``clusters`` topics; 0: isotropic), index built as ``index``
    (a ``stream_app.index.IndexConfig``; default: ``auto``) on the CPU."""
    import torch

    from coldstream.core.checkpoint import Checkpoint
    from coldstream.core.student import Student, StudentConfig
    from stream_app.recommender import ServingModel

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = StudentConfig(n_items=1, text_dim=text_dim, dim=dim, dropout=0.0, id_embeddings=False)
    model = Student(cfg).eval()
    text = catalogue_text(n_items, text_dim, clusters=clusters, rng=rng)
    vecs = np.empty((n_items, dim), np.float32)
    with torch.inference_mode():
        for c0 in range(0, n_items, 1 << 18):
            part = torch.from_numpy(text[c0 : c0 + (1 << 18)])
            vecs[c0 : c0 + len(part)] = model.item_vectors(part).numpy()
    ids = [str(i) for i in range(n_items)]
    ck = Checkpoint(
        path=Path("."),
        version=0,
        config=cfg,
        model=model,
        item_ids=ids,
        item_titles=[""] * n_items,
        item_text_vecs=np.zeros((n_items, 0), np.float32),
        item_vectors=vecs,
        metrics={"popular_items": ids[:100]},
        teacher={},
        manifest={},
        device=torch.device("cpu"),
    )
    return ServingModel.from_checkpoint(ck, prefer_gpu_index=False, index=index)


def movielens_random_student(
    root: Path | str, signer: Any, *, n_items: int = 300
) -> tuple[Path, list[tuple[str, str]]]:
    """v1 for the re-distillation scenarios: a random student over the first ``n_items``
    MovieLens-100K items (the MiniLM teacher's text vectors), signed, ``CURRENT.json`` at it;
    and MovieLens's ``(user id, item id)`` interactions on those items, in time order."""
    import torch

    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.student import Student, StudentConfig
    from trainer.data import load_movielens
    from trainer.teacher.encoder import Teacher

    inter, items = load_movielens()
    vecs = Teacher(device="cpu").encode(items.texts[:n_items])
    torch.manual_seed(0)
    model = Student(
        StudentConfig(n_items=n_items, text_dim=vecs.shape[1], dim=32, max_len=20, dropout=0.0)
    )
    path = save_checkpoint(
        root,
        model=model,
        item_ids=items.ids[:n_items],
        item_text_vecs=vecs,
        item_titles=items.titles[:n_items],
        metrics={"note": "random v1"},
        teacher={"name": "all-MiniLM-L6-v2"},
        signer=signer,
    )
    point_store(path, signer)  # CURRENT.json: v1, seq 1
    stream = [
        (inter.user_ids[int(u)], items.ids[int(i)])
        for u, i in zip(inter.user, inter.item, strict=True)
        if int(i) < n_items
    ]
    return path, stream
