"""History packing (:func:`coldstream.core.student.pack_histories`) against a plain loop, and
the numpy encoder (:class:`coldstream.core.student.NumpyEncoder`) against the torch one."""

from __future__ import annotations

import numpy as np
import torch

from coldstream.core.student import pack_histories


def _reference(rows, types, max_len):
    """The definition, one history at a time: left-aligned, the max_len most recent kept."""
    length = max(1, min(max_len, max((len(r) for r in rows), default=1)))
    idx = torch.zeros((len(rows), length), dtype=torch.long)
    typ = torch.zeros((len(rows), length), dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (r, t) in enumerate(zip(rows, types, strict=True)):
        r, t = list(r)[-length:], list(t)[-length:]
        idx[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        typ[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        mask[i, : len(r)] = True
    return idx, typ, mask


def test_pack_histories_matches_the_definition():
    rng = np.random.default_rng(1)
    for max_len in (1, 5, 50):
        rows = [list(rng.integers(0, 100, rng.integers(0, 70))) for _ in range(9)] + [[]]
        types = [list(rng.integers(0, 2, len(r))) for r in rows]
        for a, b in zip(
            pack_histories(rows, types, max_len), _reference(rows, types, max_len), strict=True
        ):
            assert torch.equal(a, b)


def test_pack_histories_hand_example():
    idx, typ, mask = pack_histories(
        [[3, 4, 5], [7], np.array([], dtype=np.int64)], [[0, 1, 1], [1], []], 2
    )
    assert idx.tolist() == [[4, 5], [7, 0], [0, 0]]
    assert typ.tolist() == [[1, 1], [1, 0], [0, 0]]
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    assert [t.shape for t in pack_histories([], [], 4)] == [(0, 1)] * 3


def test_inference_runs_each_history_for_its_own_length():
    # eval mode packs the batch (the GRU stops at each user's last event); the answer is
    # the padded forward's, and each user's answer does not depend on the batch's others
    from coldstream.core.student import Student, StudentConfig

    torch.manual_seed(0)
    cfg = StudentConfig(n_items=1, text_dim=8, dim=16, n_layers=2, dropout=0.3, max_len=12)
    model = Student(cfg)
    rng = np.random.default_rng(0)
    lens = [0, 1, 3, 12, 5, 1, 7]
    table = torch.randn(40, 16)
    rows = [rng.integers(0, 40, n).tolist() for n in lens]
    types = [rng.integers(0, 2, n).tolist() for n in lens]
    idx, typ, mask = pack_histories(rows, types, cfg.max_len)
    with torch.no_grad():
        model.eval()
        packed = model.encode_indexed(table, idx, typ, mask)
        alone = torch.cat(
            [
                model.encode_indexed(table, *pack_histories([r], [t], cfg.max_len))
                for r, t in zip(rows, types, strict=True)
            ]
        )
        model.drop.p = model.gru.dropout = 0.0  # the padded (training) forward, no dropout
        model.train()
        padded = model.encode_indexed(table, idx, typ, mask)
    assert packed.shape == (len(lens), 16)
    torch.testing.assert_close(packed, padded, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(packed, alone, atol=1e-6, rtol=1e-5)
    assert torch.equal(packed[0], model.empty_user.detach())  # no event: the learned empty user


def _student(encoder: str, n_layers: int, max_len: int):
    from coldstream.core.student import Student, StudentConfig

    cfg = StudentConfig(
        n_items=30, text_dim=8, dim=16, encoder=encoder, n_layers=n_layers, max_len=max_len
    )
    model = Student(cfg).eval()
    with torch.no_grad():  # weights far from their init, so every gate matters
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model


def test_numpy_encoder_is_the_torch_encoder():
    # GRU of one and two layers and the mean encoder; empty histories, histories longer
    # than max_len, event types outside the table (clamped), batches of 0 to 40 users
    from coldstream.core.student import NumpyEncoder

    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    table = torch.randn(30, 16)
    for encoder, n_layers in (("gru", 1), ("gru", 2), ("mean", 1)):
        model = _student(encoder, n_layers, max_len=6)
        fast = NumpyEncoder(model)
        for b in (0, 1, 2, 9, 40):
            rows = [rng.integers(0, 30, rng.integers(0, 11)).tolist() for _ in range(b)]
            types = [rng.integers(-2, 5, len(r)).tolist() for r in rows]
            got = fast.encode(table.numpy(), rows, types)
            with torch.inference_mode():
                want = model.encode_indexed(table, *pack_histories(rows, types, 6)).numpy()
            assert got.dtype == np.float32 and got.shape == (b, 16)
            np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
            for i, r in enumerate(rows):
                if not r:  # no event: the learned empty user, exactly
                    assert np.array_equal(got[i], model.empty_user.detach().numpy())


def test_numpy_encoder_answers_each_user_alone():
    # a user's vector does not depend on the batch around it (the longest-first order and
    # the prefix of active users are internal)
    from coldstream.core.student import NumpyEncoder

    torch.manual_seed(1)
    model = _student("gru", 1, max_len=50)
    fast = NumpyEncoder(model)
    table = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)
    rows = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11], [], [12, 12]]
    types = [[0] * len(r) for r in rows]
    together = fast.encode(table, rows, types)
    alone = np.concatenate([fast.encode(table, [r], [t]) for r, t in zip(rows, types, strict=True)])
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=1e-6)
    assert not np.allclose(together[0], together[4])  # different histories, different users
