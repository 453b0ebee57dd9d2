"""The offline sentence encoder, its cache, and item text."""

import numpy as np
import pandas as pd
import pytest

from advrec.errors import ConfigError, DataError
from advrec.text import SentenceEncoder, columns_text, movie_text
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
