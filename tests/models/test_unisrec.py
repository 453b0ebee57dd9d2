"""UniSRec: items read through their text vectors; unseen items are recommended from their text alone."""

import numpy as np
import pandas as pd
import pytest
import torch

from advrec.data.splits import leave_last_out
from advrec.errors import ConfigError, DataError
from advrec.evaluation import evaluate
from advrec.models import Recommender, UniSRec
from advrec.models.unisrec import MoEAdaptor
from advrec.testing import cyclic_sequences, ordered_interactions


def texts_as_vectors(monkeypatch: pytest.MonkeyPatch, vectors: np.ndarray) -> None:
    """The sentence encoder replaced by fixed vectors (one per item), so the tests need no text model."""
    monkeypatch.setattr("advrec.models.unisrec.encode_items", lambda X, *a, **k: (vectors, "test-vectors"))


def with_text(X):  # type: ignore[no-untyped-def]
    X.item_features = pd.DataFrame({"text": [f"item {i}" for i in range(X.n_items)]})
    return X


def test_adaptor_is_a_gated_mixture_of_whitening_experts() -> None:
    torch.manual_seed(0)
    a = MoEAdaptor(text_dim=5, dim=3, experts=2, dropout=0.0).eval()
    with torch.no_grad():
        a.bias.normal_()
        a.gate.weight.normal_()
    x = torch.randn(4, 5)
    g = torch.softmax(x @ a.gate.weight.T, dim=-1)
    by_hand = sum(g[:, k : k + 1] * ((x - a.bias[k]) @ a.proj[k]) for k in range(2))
    torch.testing.assert_close(a(x), by_hand)


def test_learns_the_cycle_and_saves(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    texts_as_vectors(monkeypatch, rng.normal(size=(12, 16)).astype(np.float32))
    X = with_text(cyclic_sequences(80, 12, 7, seed=0))
    split = leave_last_out(X, random_state=0)
    model = UniSRec(dim=16, blocks=1, heads=1, dropout=0.0, max_len=6, epochs=60, batch_size=16, lr=0.01,
                    patience=60, device="cpu")  # fmt: skip
    model.fit(split.train, valid=split)
    assert evaluate(model, split, ks=(1,)).summary["hit@1"] >= 0.9  # measured 1.00
    model.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(back.score(X, np.arange(5)), model.score(X, np.arange(5)))
    np.testing.assert_array_equal(back.text_vectors(), model.text_vectors())


def test_recommends_items_never_seen_in_training_from_their_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Items 12-23 are text twins of items 0-11 (same vector, small noise) and have no interaction: a history of
    twins is read like the originals', and the twin of the next item ranks near the top."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(12, 16)).astype(np.float32)
    vectors = np.concatenate([base, base + 0.05 * rng.normal(size=base.shape).astype(np.float32)])
    texts_as_vectors(monkeypatch, vectors)
    train = cyclic_sequences(80, 12, 6, seed=2)
    X = with_text(ordered_interactions([list(s) for s in _rows(train)], 24))
    model = UniSRec(dim=16, blocks=1, heads=1, dropout=0.0, adaptor_dropout=0.0, max_len=5, epochs=60,
                    batch_size=16, lr=0.01, device="cpu").fit(X)  # fmt: skip
    starts = np.arange(12)
    H = with_text(ordered_interactions([[12 + (s + j) % 12 for j in range(3)] for s in starts], 24))
    top, _ = model.recommend(H, starts, k=2)
    twin_next = 12 + (starts + 3) % 12
    hit = [(twin_next[r] in top[r]) or ((starts[r] + 3) % 12 in top[r]) for r in range(12)]
    assert np.mean(hit) >= 0.9  # measured 1.00
    assert np.isin(top, np.arange(12, 24)).any()  # cold items are recommended at all


def _rows(X):  # type: ignore[no-untyped-def]
    from advrec.data.sequences import order_positions, sequences

    order = order_positions(X.matrix, X.timestamps)
    for row in sequences(order, np.arange(X.n_users), 100):
        yield row[row > 0] - 1


def test_refuses_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    texts_as_vectors(monkeypatch, np.ones((6, 4), np.float32))
    X = with_text(cyclic_sequences(10, 6, 3, seed=0))
    with pytest.raises(DataError, match=r"bare matrix|order of each history"):
        UniSRec(epochs=1).fit(X.matrix)
    with pytest.raises(ConfigError, match="temperature"):
        UniSRec(temperature=0.0).fit(X)
    model = UniSRec(dim=8, heads=1, blocks=1, max_len=3, epochs=1, device="cpu").fit(X)
    assert model.embedding_tables()["item"].shape == (7, 8)  # the adaptor's output, row 0 the padding


def test_conformance(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from advrec.testing import check_recommender

    texts_as_vectors(monkeypatch, np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32))
    # the community data's timestamps follow item order (see test_conformance.py's SASRec case): no accuracy check
    make = lambda: UniSRec(dim=8, blocks=1, heads=1, max_len=10, epochs=3, batch_size=8, device="cpu")  # noqa: E731
    check_recommender(make, tmp_path, min_accuracy=None)
