"""The on-disk item-vector cache (:mod:`trainer.teacher.vector_cache`): keyed by the text's hash, a
second run encodes nothing, a changed text is encoded once; with the real MiniLM teacher."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.teacher.vector_cache import ItemVectorCache, folder_fingerprint, text_keys


class Counting:
    """An encoder that records what it was asked to encode (vectors from the text's hash)."""

    def __init__(self, dim: int = 8) -> None:
        self.dim, self.calls = dim, []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        seeds = text_keys(texts)[:, 0] % (2**32)
        return np.stack([np.random.default_rng(int(s)).standard_normal(self.dim) for s in seeds])


def test_second_run_encodes_nothing_and_a_changed_text_once(tmp_path):
    texts = [f"item {i}" for i in range(50)] + ["item 3", "item 7"]  # duplicates
    enc = Counting()
    first = ItemVectorCache(tmp_path, "enc", 8).encode(texts, enc)
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == sorted(set(texts))  # each text once
    assert first.shape == (52, 8)
    assert np.array_equal(first[50], first[3]) and np.array_equal(first[51], first[7])
    again = ItemVectorCache(tmp_path, "enc", 8)  # a new process: only the folder is shared
    assert np.array_equal(again.encode(texts, enc), first) and len(enc.calls) == 1
    assert again.encoded == 0
    changed = [*texts[:10], "item 10 (new edition)", *texts[11:]]
    out = again.encode(changed, enc)
    assert enc.calls[1] == ["item 10 (new edition)"] and again.encoded == 1
    assert np.array_equal(out[:10], first[:10]) and not np.array_equal(out[10], first[10])
    assert len(again) == 51
    # another encoder (another key) shares nothing
    ItemVectorCache(tmp_path, "other", 8).encode(texts[:5], enc)
    assert len(enc.calls[2]) == 5


def test_shards_merge_and_lookups_survive_it(tmp_path):
    enc = Counting(4)
    cache = ItemVectorCache(tmp_path, "enc", 4, max_shards=3)
    want = {}
    for n in range(6):  # six writes: merged whenever there are more than three shards
        texts = [f"t{n}-{i}" for i in range(5)] + ["shared"]
        for t, v in zip(texts, cache.encode(texts, enc), strict=True):
            want[t] = v
    assert len(list(cache.folder.glob("keys-*.npy"))) <= 3
    assert not list(cache.folder.glob(".*tmp*"))  # no half-written shard left behind
    fresh = ItemVectorCache(tmp_path, "enc", 4)
    vecs, found = fresh.lookup(list(want))
    assert found.all() and np.array_equal(vecs, np.stack(list(want.values())))
    assert len(fresh) == 31  # 6 x 5 + "shared" once


def test_fingerprint_changes_with_the_files_and_the_extra(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "w.bin").write_bytes(b"abc")
    a = folder_fingerprint(tmp_path, 128)
    assert folder_fingerprint(tmp_path, 128) == a and folder_fingerprint(tmp_path, 256) != a
    (tmp_path / "w.bin").write_bytes(b"abd")
    assert folder_fingerprint(tmp_path, 128) != a


@pytest.fixture(scope="module")
def minilm_texts():
    from trainer.data import load_movielens

    return load_movielens()[1].texts[:40]


def test_real_teacher_second_run_encodes_no_item(tmp_path, minilm_texts):
    import torch

    from trainer.teacher.encoder import Teacher

    torch.set_num_threads(2)
    first = Teacher(batch_size=32, item_cache=tmp_path)
    v1 = first.encode_items(minilm_texts)
    assert first.texts_encoded == 40 and v1.shape == (40, 384)
    second = Teacher(batch_size=32, item_cache=tmp_path)  # a new run, same cache folder
    v2 = second.encode_items(minilm_texts)
    assert second.texts_encoded == 0 and np.array_equal(v1, v2)
    edited = [*minilm_texts[:-1], minilm_texts[-1] + " - Director's cut"]
    v3 = second.encode_items(edited)
    assert second.texts_encoded == 1 and np.array_equal(v3[:-1], v1[:-1])
    direct = second.encode([edited[-1]])[0]
    assert np.allclose(v3[-1], direct, atol=1e-5)  # what the encoder gives for that text


def test_an_unwritable_folder_costs_the_caching_not_the_vectors(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    enc = Counting()
    cache = ItemVectorCache(blocker, "enc", 8)
    texts = ["a", "b", "c"]
    out = cache.encode(texts, enc)
    assert out.shape == (3, 8) and cache.read_only and len(enc.calls) == 1
    assert np.array_equal(cache.encode(texts, enc), out) and len(enc.calls) == 2  # re-encoded
