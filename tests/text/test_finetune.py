"""Co-occurrence pairs and contrastive fine-tuning of the offline sentence encoder."""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

import advrec.text.finetune as ft
from advrec.data.interactions import IdMap, Interactions
from advrec.errors import ConfigError, DataError
from advrec.text import SentenceEncoder
from advrec.text.encoder import default_model_path
from advrec.text.finetune import cooccurrence_pairs, distinct_item_batches, finetune_encoder

# user, item, time: u0 reads 2, 0, 1; u1 reads 0, 2, 3; u2 reads 3 and 4 at the same time (item order); u3 only 1
ROWS = [(0, 2, 1), (0, 0, 2), (0, 1, 3), (1, 0, 5), (1, 2, 6), (1, 3, 7), (2, 4, 1), (2, 3, 1), (3, 1, 9)]
TEXTS = [
    "Cordless phone with answering machine",
    "Black ink cartridge for inkjet printers",
    "Heavy duty desktop stapler",
    "Fountain pen with blue ink",
    "Spiral notebook, college ruled",
]


def interactions(rows=ROWS, texts=TEXTS, times=True) -> Interactions:
    df = pd.DataFrame(rows, columns=["user", "item", "time"])
    X = Interactions.from_frame(
        df, time="time" if times else None, users=IdMap(sorted(df.user.unique())), items=IdMap(range(len(texts)))
    )
    X.item_features = pd.DataFrame({"text": texts})
    return X


def test_pairs_of_neighbours_in_time_order():
    X = interactions()
    assert cooccurrence_pairs(X).tolist() == [[0, 1], [0, 2], [2, 3], [3, 4]]  # (0, 2) seen twice, kept once
    assert cooccurrence_pairs(X, window=2).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3], [3, 4]]


def test_pairs_cap_is_a_seeded_sample():
    X = interactions()
    full = {tuple(p) for p in cooccurrence_pairs(X).tolist()}
    capped = [cooccurrence_pairs(X, max_pairs=2, random_state=s) for s in range(8)]
    assert all(len(c) == 2 and {tuple(p) for p in c.tolist()} <= full for c in capped)
    assert all((c[:-1] <= c[1:]).all() for c in (c[:, 0] for c in capped))  # sorted rows
    np.testing.assert_array_equal(capped[3], cooccurrence_pairs(X, max_pairs=2, random_state=3))
    assert len({c.tobytes() for c in capped}) > 1


def test_batches_never_repeat_an_item():
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [2, 3], [3, 4], [5, 6]])
    batches = distinct_item_batches(pairs, 3, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(pairs)))
    for b in batches:
        assert len(b) <= 3 and len(np.unique(pairs[b])) == 2 * len(b)


def test_bad_input_is_named():
    with pytest.raises(DataError, match="timestamps"):
        cooccurrence_pairs(interactions(times=False))
    with pytest.raises(ConfigError, match="window"):
        cooccurrence_pairs(interactions(), window=0)
    X = interactions()
    X.item_features = None
    with pytest.raises(DataError, match="no item features"):
        finetune_encoder(X)
    lonely = interactions(rows=[(0, 0, 1), (1, 1, 1), (2, 0, 3)])
    with pytest.raises(DataError, match="nothing to fine-tune on"):
        finetune_encoder(lonely)
    with pytest.raises(ConfigError, match="batch_size"):
        finetune_encoder(interactions(), batch_size=1)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, seed):
    """The default model tuned on the 4 pairs of `ROWS` (a few seconds on one CPU thread)."""
    cache = tmp_path_factory.mktemp("cache")
    kw = dict(epochs=4, batch_size=4, lr=2e-4, warmup=0.0, precision="float32", cache_dir=cache, device="cpu")
    kw["random_state"] = seed
    return finetune_encoder(interactions(), **kw), kw


def test_tuned_model_is_a_loadable_folder_with_new_weights(tuned):
    folder, kw = tuned
    assert folder.parent == kw["cache_dir"] / "finetuned"
    assert (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
    assert folder.stat().st_mode & 0o777 == folder.parent.stat().st_mode & 0o777  # not mkdtemp's private mode
    manifest = json.loads((folder / ft.MANIFEST).read_text())
    assert manifest["pairs"] == 4 and manifest["settings"]["epochs"] == 4
    before, after = load_file(default_model_path() / "model.safetensors"), load_file(folder / "model.safetensors")
    assert after.keys() <= before.keys() and len(after) > 100  # the base file also holds a buffer (position ids)
    assert any(not np.array_equal(before[k], after[k]) for k in after)
    base = SentenceEncoder(cache_dir=kw["cache_dir"], device="cpu", precision="float32")
    mine = SentenceEncoder(folder, cache_dir=kw["cache_dir"], device="cpu", precision="float32")
    assert mine.identity != base.identity
    assert mine.dimension == base.dimension == 384


@pytest.mark.statistical
def test_trained_pairs_come_closer(tuned, claim):
    folder, _ = tuned
    trained, untrained = [(0, 1), (0, 2), (2, 3), (3, 4)], [(0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 4)]
    gain = {}
    base = SentenceEncoder(cache=False, device="cpu", precision="float32").encode(TEXTS)
    mine = SentenceEncoder(folder, cache=False, device="cpu", precision="float32").encode(TEXTS)
    for name, pairs in (("trained", trained), ("untrained", untrained)):
        gain[name] = np.mean([mine[a] @ mine[b] - base[a] @ base[b] for a, b in pairs])
    # seeds 0-5: the trained pairs' mean cosine rose by 0.27-0.42, and by 0.52-0.84 more than the untrained pairs'
    assert claim("trained cosine gain", gain["trained"]) > 0.15
    assert claim("gain over untrained", gain["trained"] - gain["untrained"]) > 0.3


def test_second_call_reads_the_cache(tuned, monkeypatch):
    folder, kw = tuned

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the same inputs were tuned before")

    monkeypatch.setattr(ft, "_train", no_training)
    assert finetune_encoder(interactions(), **kw) == folder
    with pytest.raises(AssertionError, match="trained again"):  # other settings are another model
        finetune_encoder(interactions(), **(kw | {"lr": 1e-4}))
    with pytest.raises(ConfigError, match="holds something else"):
        finetune_encoder(interactions(), out=folder, **(kw | {"lr": 1e-4}))


def test_same_seed_same_weights(tuned, tmp_path):
    folder, kw = tuned
    again = finetune_encoder(interactions(), out=tmp_path / "again", **kw)
    assert again == tmp_path / "again"
    first, second = load_file(folder / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(np.array_equal(first[k], second[k]) for k in first)
