"""The serving recommender: student + item index + popularity fallback, batched.

Everything a recommendation depends on (checkpoint, item catalogue, item table, index) is
held in one :class:`ServingModel`; the :class:`Recommender` keeps a single reference to it.
A hot swap builds a whole new bundle beside the old one (off the event loop, index trained
and tuned there) and replaces that one reference between micro-batches, so a batch never
sees half a model. Item upserts change the served bundle **in place** (the item's row of
the table and its index entry; a new item takes a free slot or the next one, the table
growing geometrically), under :attr:`Recommender.lock`, which every ranking also holds: a
batch sees an upsert entirely or not at all.

Costs per micro-batch of B users with histories of at most L events, catalogue of N items:
encoding O(B x L); search as the index's (:mod:`stream_app.index`: exact O(B x N), IVF
O(B x nprobe x N / nlist)) for ``k + min(L, SEARCH_MARGIN)`` results per user, the few users
whose seen items took more of them searched again at their own ``k + |seen|``
(:func:`search_unseen`); seen-item exclusion O(B x (k + margin) x log(B x L)) in numpy; the
popularity fallback O(k + L) per cold user (a running total and a top list refreshed at
most once a second, :class:`stream_app.online.WindowedCounter`). An upsert of n items costs
O(n) (amortised over the table's growth).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coldstream.core.checkpoint import Checkpoint, load_checkpoint
from coldstream.core.events import EVENT_TYPES
from coldstream.core.rollout import arm_of
from coldstream.core.student import NumpyEncoder, pack_histories
from stream_app.index import (
    IndexConfig,
    IndexReport,
    ItemIndex,
    SearchParams,
    VectorStore,
    make_index,
    omp_threads,
)
from stream_app.online import WindowedCounter
from stream_app.sessions import EVENT_TYPE, ITEM_ID

History = Sequence[Any]
"""A user's events, oldest first: bare ``item_id``s or entries that start like a session's
(:data:`stream_app.sessions.SessionEntry`: ``item_id``, then optionally ``event_type``, ...)."""

POPULAR = "popular"
"""``fallback`` of a recommendation made from popularity (no event of the user is known)."""


class Catalog:
    """The served items: ``item_id`` <-> slot (the item's row in the table and its id in the
    index), free slots reused first; the item table as a tensor on the model's device.

    On the CPU the table *is* the index's :class:`~stream_app.index.VectorStore` buffer (no
    copy); on a GPU a device copy is kept in step row by row. Changed in place, under the
    recommender's lock."""

    def __init__(
        self,
        item_ids: Sequence[str],
        index: ItemIndex,
        device: torch.device,
        device_table: torch.Tensor | None = None,
    ) -> None:
        self.ids: list[str | None] = list(item_ids)
        """Item id of each slot (``None``: a free slot)."""
        self.slot_of: dict[str, int] = {iid: i for i, iid in enumerate(self.ids) if iid}
        self.free: list[int] = []
        self.index = index
        self.device = device
        self._device_table = device_table if device.type != "cpu" else None
        self._cpu: tuple[np.ndarray, torch.Tensor] | None = None

    @property
    def n_items(self) -> int:
        return len(self.slot_of)

    @property
    def dim(self) -> int:
        return self.index.dim

    def table(self) -> torch.Tensor:
        """Item vectors ``[slots, dim]`` on the model's device (rows of free slots are zero)."""
        if self._device_table is not None:
            return self._device_table
        arr = self.index.store.array
        if self._cpu is None or self._cpu[0] is not arr:  # the store grew: a new buffer
            self._cpu = (arr, torch.from_numpy(arr))
        return self._cpu[1]

    def plan(self, ids: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Slots for ``ids`` (their own, else free ones, else new ones) and which are new;
        nothing changes until :meth:`commit`."""
        slots, fresh = [], []
        free = list(self.free)
        nxt = len(self.ids)
        for iid in ids:
            s = self.slot_of.get(iid)
            if s is None:
                if free:
                    s = free.pop()
                else:
                    s, nxt = nxt, nxt + 1
                fresh.append(True)
            else:
                fresh.append(False)
            slots.append(s)
        return np.asarray(slots, np.int64), fresh

    def commit(
        self, ids: Sequence[str], slots: np.ndarray, fresh: Sequence[bool], vecs: np.ndarray
    ) -> None:
        taken = set()
        for iid, s, new in zip(ids, slots.tolist(), fresh, strict=True):
            if not new:
                continue
            if s >= len(self.ids):
                self.ids.extend([None] * (s + 1 - len(self.ids)))
            self.ids[s] = iid
            self.slot_of[iid] = s
            taken.add(s)
        if taken:
            self.free = [s for s in self.free if s not in taken]
        if self._device_table is not None:
            self._mirror(slots, vecs)

    def release(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            iid = self.ids[s]
            if iid is not None:
                del self.slot_of[iid]
                self.ids[s] = None
                self.free.append(s)

    def _mirror(self, slots: np.ndarray, vecs: np.ndarray) -> None:
        t = self._device_table
        assert t is not None
        cap = self.index.store.capacity
        if cap > t.shape[0]:  # geometric, like the store
            grown = torch.zeros((cap, t.shape[1]), dtype=t.dtype, device=t.device)
            grown[: t.shape[0]] = t
            t = self._device_table = grown
        idx = torch.from_numpy(slots).to(t.device)
        t[idx] = torch.from_numpy(vecs).to(device=t.device, dtype=t.dtype)


def sample_queries(ck: Checkpoint, n: int, seed: int = 0) -> np.ndarray | None:
    """``n`` user vectors of the model for random histories (1-10 catalogue items, uniform):
    the queries of the index's build-time recall measurement."""
    if n <= 0 or not ck.item_ids:
        return None
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 11, n)
    rows = [rng.integers(0, len(ck.item_ids), int(length)).tolist() for length in lens]
    types = [[0] * len(r) for r in rows]
    idx, typ, mask = pack_histories(rows, types, ck.config.max_len, ck.device)
    with torch.inference_mode():
        users = ck.model.encode_indexed(ck.table, idx, typ, mask)
    return np.ascontiguousarray(users.float().cpu().numpy())


@dataclass(frozen=True, eq=False)
class ServingModel:
    """One bundle: the checkpoint, its catalogue, item table and index (see the module doc)."""

    version: str
    checkpoint: Checkpoint
    catalog: Catalog
    popular_seed: tuple[str, ...] = ()
    """Fallback items before any popularity has been observed (checkpoint order or metrics)."""
    index_report: IndexReport | None = None
    """How the index was built: kind, parameters, build-time recall@10."""

    @property
    def index(self) -> ItemIndex:
        return self.catalog.index

    @property
    def device(self) -> torch.device:
        return self.checkpoint.device

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    @property
    def item_ids(self) -> Sequence[str | None]:
        """Item id per slot (``None``: free)."""
        return self.catalog.ids

    @property
    def index_of(self) -> Mapping[str, int]:
        """Slot per served item id."""
        return self.catalog.slot_of

    @property
    def table(self) -> torch.Tensor:
        return self.catalog.table()

    @functools.cached_property
    def numpy_encoder(self) -> NumpyEncoder | None:
        """The student's encoder in numpy (:class:`~coldstream.core.student.NumpyEncoder`),
        which ranking uses on CPU with float32 weights; ``None`` elsewhere (torch encodes)."""
        model = self.checkpoint.model
        if self.device.type != "cpu" or any(p.dtype != torch.float32 for p in model.parameters()):
            return None
        return NumpyEncoder(model)

    @classmethod
    def from_checkpoint(
        cls,
        ck: Checkpoint,
        *,
        prefer_gpu_index: bool = True,
        index: IndexConfig | None = None,
    ) -> ServingModel:
        """Build the bundle: item table, index trained, filled and tuned (blocking: run it
        off the event loop). The bundle takes over ``ck.item_vectors`` as its table."""
        cfg = index or IndexConfig()
        store = VectorStore.adopt(ck.item_vectors)
        idx = make_index(
            ck.config.dim,
            n_items=len(ck.item_ids),
            config=cfg,
            store=store,
            prefer_gpu=prefer_gpu_index,
        )
        with omp_threads(cfg.threads):  # this thread's setting (OpenMP's are per thread)
            report = idx.build(sample=sample_queries(ck, cfg.recall_sample, cfg.seed))
        seed = ck.metrics.get("popular_items") if isinstance(ck.metrics, dict) else None
        if not (isinstance(seed, list) and all(isinstance(s, str | int) for s in seed)):
            seed = ck.item_ids[:200]
        device_table = ck.table if ck.device.type != "cpu" else None
        return cls(
            version=str(ck.version),
            checkpoint=ck,
            catalog=Catalog(ck.item_ids, idx, ck.device, device_table),
            popular_seed=tuple(str(s) for s in seed),
            index_report=report,
        )


@dataclass
class Ranked:
    """Result of one batch: per history the ``(item_id, score)`` list and the fallback used."""

    items: list[list[tuple[str, float]]]
    fallback: list[str | None]
    inference_s: float = 0.0
    search_s: float = 0.0
    n_known_users: int = 0


def _entry(ev: Any) -> tuple[str, int]:
    if isinstance(ev, str | int):
        return str(ev), 0
    iid = str(ev[ITEM_ID])
    et = ev[EVENT_TYPE] if len(ev) > EVENT_TYPE else 0
    return iid, (EVENT_TYPES.get(et, 0) if isinstance(et, str) else int(et))


_item_of, _type_of = itemgetter(ITEM_ID), itemgetter(EVENT_TYPE)
_LONG = 8
"""From this many events a history takes the column-wise path of :func:`_history_rows`
(below it, the per-event loop is as fast)."""


def _history_rows(
    recent: Sequence[Any], slot_of: Mapping[str, int]
) -> tuple[list[int], list[int], list[str]]:
    """``(rows, types, ids)`` of a history: the table rows and event types of the events whose
    item the model knows, and every event's item id (what :func:`_entry` gives, event by
    event). A long history of session entries (lists of a ``str`` item id and an ``int``
    type code, :mod:`stream_app.sessions`) is read column by column in C, about 8 µs less per
    event with 50 events (a returning user's every event ranks their whole history;
    docs/results.md)."""
    if (
        len(recent) >= _LONG
        and set(map(type, recent)) == {list}
        and min(map(len, recent)) > EVENT_TYPE
    ):
        ids = list(map(_item_of, recent))
        types = list(map(_type_of, recent))
        if set(map(type, ids)) == {str} and set(map(type, types)) == {int}:
            got = list(map(slot_of.get, ids))
            rows = [r for r in got if r is not None]
            if len(rows) < len(got):  # items the model does not know: their types go too
                types = [t for r, t in zip(got, types, strict=True) if r is not None]
            return rows, types, ids
    rows, types, ids = [], [], []  # short, or not all session entries: event by event
    for ev in recent:
        iid, et = _entry(ev)
        ids.append(iid)
        r = slot_of.get(iid)
        if r is not None:
            rows.append(r)
            types.append(et)
    return rows, types, ids


@dataclass(frozen=True)
class Candidate:
    """A rollout's candidate, held beside the live model (docs/rollout.md): a ``canary``
    serves the users :func:`coldstream.core.rollout.assign` puts in its ``share``; a
    ``shadow`` ranks every user's events but is never published. At most one at a time."""

    model: ServingModel
    arm: str
    share: float
    rollout_id: str
    seq: int
    sha256: str = ""
    """The manifest digest its update announced (a promotion of the same bundle reuses it)."""

    def serves(self, user_id: str) -> bool:
        """Whether this candidate answers ``user_id`` (a canary user; never for a shadow)."""
        return (
            arm_of(user_id, candidate_arm=self.arm, share=self.share, rollout_id=self.rollout_id)
            == "canary"
        )


@dataclass
class Recommender:
    """Batched top-K with seen items excluded; unknown items tolerated; popularity fallback."""

    model: ServingModel
    max_history: int = 50
    popularity: WindowedCounter = field(default_factory=WindowedCounter)
    """Popularity of the current window behind the fallback (bounded, see
    :class:`~stream_app.online.WindowedCounter`)."""
    index_config: IndexConfig = field(default_factory=IndexConfig)
    """How swapped-in bundles build their index (:meth:`build_model`)."""
    lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)
    """Serialises ranking, popularity updates and upserts: the worker ranks its micro-batches
    on the event loop and ``GET /recommend`` on a ranking thread (``stream_app.web``); FAISS
    does not allow a search beside an ``add`` (nor two searches on one GPU's resources)."""
    candidate: Candidate | None = None
    """A rollout's candidate served beside :attr:`model` (:class:`Candidate`), or ``None``."""
    _popular_cache: list[tuple[str, float]] = field(default_factory=list)
    _popular_at: float = 0.0
    _popular_dirty: bool = True

    # -- loading / swapping ----------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: Path | str,
        *,
        device: str | torch.device = "cpu",
        max_history: int = 50,
        prefer_gpu_index: bool = True,
        index: IndexConfig | None = None,
    ) -> Recommender:
        ck = load_checkpoint(path, device=device)
        cfg = index or IndexConfig()
        return cls(
            ServingModel.from_checkpoint(ck, prefer_gpu_index=prefer_gpu_index, index=cfg),
            max_history=max_history,
            index_config=cfg,
        )

    @classmethod
    def from_settings(cls, ck: Checkpoint, settings: Any) -> Recommender:
        """The worker's recommender for a loaded checkpoint (``stream_app.settings.Settings``:
        ``index*``, ``popular_*``, ``max_history``); builds the index (blocking)."""
        cfg = IndexConfig.from_settings(settings)
        return cls(
            ServingModel.from_checkpoint(ck, index=cfg),
            max_history=settings.max_history,
            popularity=WindowedCounter(
                settings.popular_window_s, capacity=settings.popular_capacity
            ),
            index_config=cfg,
        )

    def build_model(self, ck: Checkpoint, *, prefer_gpu_index: bool = True) -> ServingModel:
        """A new bundle for ``ck`` with this recommender's index settings (blocking: the
        swap calls it in an executor)."""
        return ServingModel.from_checkpoint(
            ck, prefer_gpu_index=prefer_gpu_index, index=self.index_config
        )

    def swap(self, new: ServingModel) -> ServingModel:
        """Replace the served bundle (one reference); returns the old one."""
        old, self.model = self.model, new
        self._popular_dirty = True
        return old

    # -- popularity ----------------------------------------------------------------------
    def observe(self, item_ids: Iterable[str], users: Iterable[str] | None = None) -> None:
        """Count one micro-batch's events for the popularity fallback: served items only;
        with ``users`` (aligned with ``item_ids``), each user counts at most once per item
        and time bucket, so no single account moves the popular list."""
        with self.lock:
            served = self.model.index_of
            items = [str(i) for i in item_ids]
            if users is None:
                self.popularity.update([i for i in items if i in served])
            else:
                us = [str(u) for u in users]
                if len(us) != len(items):
                    raise ValueError(f"{len(us)} users for {len(items)} items")
                pairs = [(i, u) for i, u in zip(items, us, strict=True) if i in served]
                self.popularity.update([i for i, _ in pairs], users=[u for _, u in pairs])
            self._popular_dirty = True

    def _popular(self, n: int) -> list[tuple[str, float]]:
        now = time.monotonic()
        if self._popular_dirty and (now - self._popular_at > 1.0 or not self._popular_cache):
            total = max(1.0, self.popularity.total)
            top = [(iid, c / total) for iid, c in self.popularity.most_common(n)]
            seen = {iid for iid, _ in top}
            self._popular_cache = top + [(s, 0.0) for s in self.model.popular_seed if s not in seen]
            self._popular_at, self._popular_dirty = now, False
        return self._popular_cache

    def popular(self, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` most popular served items of the window (then the seed), ``exclude``d
        ones left out; scores are shares of the window's counted events."""
        with self.lock:
            return self._popular_items(k, set(exclude))

    def _popular_items(self, k: int, excl: set[str]) -> list[tuple[str, float]]:
        served = self.model.index_of
        out = []
        for iid, share in self._popular(k + self.max_history + 50):
            if iid in served and iid not in excl:
                out.append((iid, share))
                if len(out) == k:
                    break
        return out

    # -- ranking ---------------------------------------------------------------------------
    def recommend_batch(
        self, histories: Sequence[History], k: int
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(item_id, score)`` per history, items of the history excluded."""
        return self.rank_batch(histories, k).items

    def rank_batch(
        self, histories: Sequence[History], k: int, model: ServingModel | None = None
    ) -> Ranked:
        """Top-``k`` per history with the fallback used; safe from any thread (:attr:`lock`).
        ``model``: rank with this bundle (a rollout's candidate) instead of the live one."""
        with self.lock:
            return self._rank_batch(histories, k, model)

    @torch.inference_mode()
    def _rank_batch(
        self, histories: Sequence[History], k: int, model: ServingModel | None = None
    ) -> Ranked:
        m = model or self.model  # one read: the whole batch uses one bundle
        slot_of = m.catalog.slot_of
        n = len(histories)
        items: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        fallback: list[str | None] = [None] * n
        rows_l, types_l, seen_ids, known = [], [], [], []
        for i, h in enumerate(histories):
            rows, types, ids = _history_rows(list(h)[-self.max_history :], slot_of)
            seen_ids.append(ids)
            if rows:
                known.append(i)
                rows_l.append(rows)
                types_l.append(types)
        inference_s = search_s = 0.0
        if known and k > 0:
            t0 = time.perf_counter()
            table, encoder = m.table, m.numpy_encoder
            if encoder is not None and table.dtype == torch.float32:
                users = encoder.encode(table.numpy(), rows_l, types_l)
            else:
                idx, typ, mask = pack_histories(
                    rows_l, types_l, m.checkpoint.config.max_len, m.device
                )
                users = (
                    m.checkpoint.model.encode_indexed(table, idx, typ, mask).float().cpu().numpy()
                )
            t1 = time.perf_counter()
            inference_s = t1 - t0
            got = self._search(m, users, rows_l, k)
            search_s = time.perf_counter() - t1
            for j, i in enumerate(known):
                items[i] = got[j]
        known_set = set(known)
        for i in range(n):
            if i not in known_set:  # no event of this user is known to the model
                fallback[i] = POPULAR
                items[i] = self.popular(k, exclude=seen_ids[i])
        return Ranked(items, fallback, inference_s, search_s, len(known))

    def _search(
        self, m: ServingModel, users: np.ndarray, rows_l: list[list[int]], k: int
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` per user with the user's seen slots excluded (:func:`search_unseen`:
        the cost per user does not grow with the longest history of the batch)."""
        scores, found = search_unseen(m.index, users, rows_l, k, m.n_items)
        return _listed(m.catalog.ids, scores, found, found >= 0)

    # -- item cold start -------------------------------------------------------------------
    def upsert_items(self, ids: Sequence[str], vectors: np.ndarray) -> ServingModel:
        """Add (or replace) items by their vectors, in place in the served bundle (its table
        row and index entry; O(len(ids))); returns the bundle. A later duplicate id wins."""
        vecs = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        ids = [str(i) for i in ids]
        with self.lock:
            m = self.model
            dim = m.catalog.dim
            if vecs.shape != (len(ids), dim):
                raise ValueError(f"vectors shape {vecs.shape} != ({len(ids)}, {dim})")
            if not np.isfinite(vecs).all():
                raise ValueError("item vectors must be finite")
            last = {iid: j for j, iid in enumerate(ids)}  # duplicates: the last one wins
            if len(last) != len(ids):
                ids, vecs = list(last), vecs[list(last.values())]
            slots, fresh = m.catalog.plan(ids)
            m.index.upsert(slots, vecs)
            m.catalog.commit(ids, slots, fresh, vecs)
            self._popular_dirty = True
            return m

    def remove_items(self, ids: Iterable[str]) -> int:
        """Remove served items (their slots are reused by later upserts); returns how many."""
        with self.lock:
            m = self.model
            slots = np.asarray(
                sorted({m.catalog.slot_of[i] for i in map(str, ids) if i in m.catalog.slot_of}),
                np.int64,
            )
            if slots.size:
                m.index.remove(slots)
                m.catalog.release(slots)
                self._popular_dirty = True
            return int(slots.size)


SEARCH_MARGIN = 16
"""Results asked of the index per user beyond ``k`` in the first search of a batch (fewer if
no user of the batch has seen as many items): users whose seen items took more of their
results are searched again at their own width. ``coldstream bench search`` (IVF-PQ,
batches of 64 users, most histories of 1-20 events, two of 200-500): with no margin 97% of
the users are searched again (their latest items fill their first results) and the search
costs 2x; at 8, 0.1-0.4% are; at 16 none, for 0-6% more CPU than 8; recall@10 is the same
at every margin and the same as the batch-wide search's, at 1/3 (1M items) to 1/4 (100k)
of its CPU per user."""


def search_unseen(
    index: ItemIndex,
    users: np.ndarray,
    rows_l: Sequence[Sequence[int]],
    k: int,
    n_items: int,
    margin: int = SEARCH_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores [B, k], slots [B, k])`` per user, best first, the user's seen
    slots ``rows_l[j]`` excluded (``-inf`` / ``-1``: none left).

    One search of the batch for ``k + min(max |seen|, margin)`` results, filtered; only the
    users left short are searched again, each at its own width ``k + |seen|`` (in groups of
    widths within 2x, one index call per group), which an exact index always fills. An
    approximate index can still leave a user short (its probed lists hold too few items):
    those users are searched again with 8x the lists probed and twice the width, until the
    index probes every list. The same items (and scores) as :func:`search_wide` on an exact
    index; on an approximate one, a user's candidates no longer grow with its batch-mates'
    histories."""
    b = len(rows_l)
    out_s = np.full((b, k), -np.inf, np.float32)
    out_f = np.full((b, k), -1, np.int64)
    if b == 0 or k <= 0:
        return out_s, out_f
    keys, n_seen = _seen_keys(rows_l)
    wanted = np.minimum(k, np.maximum(n_items - n_seen, 0))
    need = np.minimum(n_items, k + n_seen)
    width = min(n_items, k + min(int(n_seen.max()), margin))
    everyone = np.arange(b, dtype=np.int64)
    scores, found = index.search(users, width)
    got = _take(everyone, scores, found, keys, k, out_s, out_f)
    short = everyone[got < wanted]
    again = short[need[short] > width]  # an exact index needs no more than k + |seen|
    if again.size:
        got[again] = _search_groups(index, users, again, need[again], keys, k, out_s, out_f)
        short = short[got[short] < wanted[short]]
    nprobe = int(getattr(index, "nprobe", 0))
    nlist = int(getattr(index, "nlist", 0))
    tried = np.maximum(need, width)
    while short.size and nprobe < nlist:  # approximate: probe 8x more lists, rarely
        nprobe = min(nlist, 8 * nprobe)
        tried[short] = np.minimum(n_items, 2 * tried[short] + k)
        got[short] = _search_groups(
            index, users, short, tried[short], keys, k, out_s, out_f, SearchParams(nprobe=nprobe)
        )
        short = short[got[short] < wanted[short]]
    return out_s, out_f


def _seen_keys(rows_l: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ``user << 32 | slot`` keys of the seen slots, and ``|seen|`` per user
    (duplicates counted once)."""
    lens = np.fromiter(map(len, rows_l), np.int64, count=len(rows_l))
    slots = np.fromiter(itertools.chain.from_iterable(rows_l), np.int64, count=int(lens.sum()))
    owner = np.repeat(np.arange(len(rows_l), dtype=np.int64), lens)
    keys = np.unique((owner << 32) | slots)
    return keys, np.bincount(keys >> 32, minlength=len(rows_l))


def _unseen(found: np.ndarray, who: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Mask of the first ``k`` results per row that are found and not seen by the row's user
    ``who`` (a binary search in ``keys``: O(results x log seen), whatever the longest
    history)."""
    q = (who[:, None] << 32) | np.maximum(found, 0)
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    good = (found >= 0) & (keys[pos] != q) if keys.size else found >= 0
    return good & (np.cumsum(good, axis=1) <= k)


def _take(
    who: np.ndarray,
    scores: np.ndarray,
    found: np.ndarray,
    keys: np.ndarray,
    k: int,
    out_s: np.ndarray,
    out_f: np.ndarray,
) -> np.ndarray:
    """Write the first ``k`` unseen results of rows ``who`` into ``out_*`` (left-aligned, the
    rest ``-inf``/``-1``); returns how many each row got."""
    keep = _unseen(found, who, keys, k)
    r, c = np.nonzero(keep)
    dest = (np.cumsum(keep, axis=1) - 1)[r, c]
    out_s[who], out_f[who] = -np.inf, -1
    out_s[who[r], dest] = scores[r, c]
    out_f[who[r], dest] = found[r, c]
    return keep.sum(axis=1)


def _search_groups(
    index: ItemIndex,
    users: np.ndarray,
    who: np.ndarray,
    widths: np.ndarray,
    keys: np.ndarray,
    k: int,
    out_s: np.ndarray,
    out_f: np.ndarray,
    params: SearchParams | None = None,
) -> np.ndarray:
    """Search users ``who`` again, each at (at least) its ``widths`` and at most twice it:
    one index call per power-of-two width class; returns how many results each got."""
    got = np.zeros(who.size, np.int64)
    cls = np.ceil(np.log2(np.maximum(widths, 1))).astype(np.int64)
    for c in np.unique(cls).tolist():
        sel = np.flatnonzero(cls == c)
        s, f = index.search(users[who[sel]], int(widths[sel].max()), params)
        got[sel] = _take(who[sel], s, f, keys, k, out_s, out_f)
    return got


def search_wide(
    index: ItemIndex,
    users: np.ndarray,
    rows_l: Sequence[Sequence[int]],
    k: int,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The search before :func:`search_unseen` (kept for ``coldstream bench search`` and
    its test): one search of ``k + max |seen|`` for the whole batch, a vectorised filter;
    users left short (an approximate index found too few) are searched again with 8x the
    lists probed. Returns ``(scores, slots, keep)``."""
    width = max(len(r) for r in rows_l)
    seen = np.full((len(rows_l), width), -2, dtype=np.int64)
    for j, user_rows in enumerate(rows_l):
        seen[j, : len(user_rows)] = user_rows
    n_seen = np.fromiter((len(set(r)) for r in rows_l), np.int64, count=len(rows_l))
    kk = min(n_items, k + int(n_seen.max()))
    scores, found = index.search(users, kk)
    keep = _keep(found, seen, k)
    wanted = np.minimum(k, n_items - n_seen)
    short = np.flatnonzero(keep.sum(axis=1) < wanted)
    nprobe = int(getattr(index, "nprobe", 0))
    nlist = int(getattr(index, "nlist", 0))
    while short.size and nprobe < nlist:  # approximate: probe 8x more lists, rarely
        nprobe = min(nlist, 8 * nprobe)
        kk2 = min(n_items, 2 * kk + k)
        s2, f2 = index.search(users[short], kk2, SearchParams(nprobe=nprobe))
        k2 = _keep(f2, seen[short], k)
        if kk2 > found.shape[1]:
            pad = kk2 - found.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
            keep = np.pad(keep, ((0, 0), (0, pad)))
        width2 = f2.shape[1]
        scores[short, :width2], found[short, :width2], keep[short, :width2] = s2, f2, k2
        keep[short, width2:] = False
        short = short[k2.sum(axis=1) < wanted[short]]
    return scores, found, keep


def _keep(found: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Mask of the first ``k`` results per row that are found and not seen (``seen``: the
    rows' seen slots, padded with ``-2``; :func:`search_wide`)."""
    good = (found >= 0) & ~(found[:, :, None] == seen[:, None, :]).any(axis=2)
    return good & (np.cumsum(good, axis=1) <= k)


def _listed(
    ids: Sequence[str | None], scores: np.ndarray, found: np.ndarray, keep: np.ndarray
) -> list[list[tuple[str, float]]]:
    """Per row, the ``(item_id, score)`` of the kept results, in order."""
    ends = np.cumsum(keep.sum(axis=1)).tolist()
    pairs = list(zip([ids[s] for s in found[keep].tolist()], scores[keep].tolist(), strict=True))
    return [pairs[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
