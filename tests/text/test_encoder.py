"""The offline sentence encoder, its cache, and item text."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.errors import ConfigError, DataError
from advrec.text import SentenceEncoder, columns_text, item_texts, movie_text
from advrec.text.encoder import default_model_path


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return SentenceEncoder(cache_dir=tmp_path_factory.mktemp("cache"), device="cpu")


def test_default_model_is_offline_and_ships_with_the_package():
    assert (default_model_path() / "model.safetensors").exists()


def test_similar_titles_are_close(encoder):
    v = encoder.encode(["Toy Story 2", "Toy Story", "Schindler's List"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_cache_serves_second_call_without_the_model(encoder, monkeypatch):
    texts = [
        "Heat (1995). Genres: Action, Crime.",
        "Casino (1995). Genres: Crime, Drama.",
        "Heat (1995). Genres: Action, Crime.",
    ]
    first = encoder.encode(texts)
    np.testing.assert_array_equal(first[0], first[2])

    def no_model(_texts):
        raise AssertionError("the model was called for cached texts")

    monkeypatch.setattr(encoder, "_encode_new", no_model)
    np.testing.assert_array_equal(encoder.encode(texts[::-1]), first[::-1])
    fresh = SentenceEncoder(cache_dir=encoder.cache_dir, device="cpu")
    monkeypatch.setattr(fresh, "_encode_new", no_model)
    np.testing.assert_array_equal(fresh.encode(texts), first)  # read back from disk by a new encoder


def test_cache_keyed_by_model_identity(encoder, tmp_path):
    other = SentenceEncoder(model=str(tmp_path / "not-a-model"), cache_dir=encoder.cache_dir)
    assert other.identity != encoder.identity
    with pytest.raises(ConfigError, match="cannot load text model"):
        other.encode(["anything"])


def test_empty_text_is_an_error(encoder):
    with pytest.raises(ConfigError, match="text 1"):
        encoder.encode(["fine", "  "])


def test_movie_text_and_columns_text():
    df = pd.DataFrame(
        {
            "title": ["Toy Story", "Heat"],
            "year": pd.array([1995, None], dtype="Int64"),
            "genres": ["Animation|Comedy", ""],
            "tags": ["pixar|fun", None],
        }
    )
    assert movie_text(df) == ["Toy Story (1995). Genres: Animation, Comedy. Tags: pixar, fun.", "Heat."]
    assert columns_text(df, ["title", "genres"]) == ["title: Toy Story. genres: Animation, Comedy.", "title: Heat."]
    with pytest.raises(DataError, match="plot"):
        columns_text(df, ["plot"])


def test_item_texts_default_to_a_ready_made_text_column():
    features = pd.DataFrame({"title": ["Pen|Blue", "Ink"], "text": ["Pen | Blue. Office. Bic.", " "]})
    X = Interactions(sp.csr_matrix((1, 2), dtype=np.float32), IdMap([0]), IdMap([0, 1]), item_features=features)
    assert item_texts(X) == ["Pen | Blue. Office. Bic.", "unknown"]  # as written; blank → "unknown"
    assert item_texts(X, ["title"]) == ["title: Pen, Blue.", "title: Ink."]
    assert item_texts(X.subset(items=np.array([1]))) == ["unknown"]


def test_reduced_precision_matches_float32_and_has_its_own_cache(encoder):
    texts = ["Toy Story (1995). Genres: Animation, Comedy.", "Heat (1995). Genres: Action, Crime.", "Fargo"]
    exact = SentenceEncoder(cache=False, device="cpu", precision="float32").encode(texts)
    bf16 = SentenceEncoder(cache=False, device="cpu", precision="bfloat16")
    np.testing.assert_allclose((bf16.encode(texts) * exact).sum(axis=1), 1.0, atol=2e-3)
    f32 = SentenceEncoder(cache_dir=encoder.cache_dir, device="cpu", precision="float32")
    assert bf16.identity.endswith(":bfloat16") and f32.identity != bf16.identity
    with pytest.raises(ConfigError, match="precision"):
        SentenceEncoder(precision="int4")


def test_batches_follow_token_length_and_budget():
    enc = SentenceEncoder(batch_size=3, max_batch_tokens=8)
    lengths = np.array([2, 8, 2, 4, 2, 2, 2])
    batches = enc._batches(lengths)
    assert [b.tolist() for b in batches] == [[1], [3, 0], [2, 4, 5], [6]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    assert all(len(b) * lengths[b].max() <= 8 for b in batches)


def test_order_of_batching_does_not_change_vectors(encoder):
    texts = ["a", "a much longer text about a film with many words in it", "Heat", "Toy Story 2"]
    whole = SentenceEncoder(cache=False, device="cpu", precision="float32").encode(texts)
    single = np.vstack([SentenceEncoder(cache=False, device="cpu", precision="float32").encode([t]) for t in texts])
    np.testing.assert_allclose(whole, single, atol=1e-5)
