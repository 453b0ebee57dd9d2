"""APR and embedding attacks on SASRec and UniSRec: the item table (UniSRec: the adaptor's output) is perturbed,
the loss rises, curves run on leave-last-out."""

import numpy as np
import pandas as pd
import pytest
import torch

from advrec.data.splits import leave_last_out
from advrec.evaluation import evaluate
from advrec.models import SASRec, UniSRec
from advrec.robustness.perturb import APR, adversarial_fit, attack_embeddings, robustness_curve
from advrec.testing import cyclic_sequences


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return cyclic_sequences(60, 12, 7, seed=0)


@pytest.fixture(scope="module")
def sasrec(data):  # type: ignore[no-untyped-def]
    return SASRec(dim=16, blocks=1, max_len=6, epochs=40, batch_size=16, lr=0.01, device="cpu").fit(data)


def _loss(model, data) -> float:  # type: ignore[no-untyped-def]
    (batch,) = model.attack_batches(data, np.random.default_rng(0), 10**6)[:1]
    with torch.no_grad():
        return float(model.batch_loss(batch))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_perturb_the_item_table_within_eps_and_raise_the_loss(data, sasrec, method) -> None:  # type: ignore[no-untyped-def]
    attacked = attack_embeddings(sasrec, data, eps=0.5, method=method, steps=5)
    clean_table = sasrec.embedding_tables()["item"].detach().numpy()
    delta = attacked.embedding_tables()["item"].detach().numpy() - clean_table
    assert np.linalg.norm(delta, axis=1).max() <= 0.5 + 1e-5
    assert np.abs(delta[0]).max() == 0  # the padding row gets no gradient
    # measured: clean 0.01, FGSM 0.21, PGD 0.35 (the model is sure of each next item; eps 0.5 breaks it)
    assert _loss(attacked, data) > 5 * _loss(sasrec, data)
    np.testing.assert_array_equal(sasrec.embedding_tables()["item"].detach().numpy(), clean_table)  # a copy


def test_apr_term_on_a_sequence_batch(data, sasrec) -> None:  # type: ignore[no-untyped-def]
    batch = sasrec.attack_batches(data, np.random.default_rng(0), 0)[0]
    loss = sasrec.batch_loss(batch)
    assert float(APR(0.0, 1.0).loss(sasrec, batch, loss).detach()) == pytest.approx(2 * float(loss.detach()), rel=1e-5)
    assert float(APR(1.0, 1.0).loss(sasrec, batch, loss).detach()) > 2 * float(loss.detach())


def test_adversarial_training_and_the_robustness_curve(data) -> None:  # type: ignore[no-untyped-def]
    split = leave_last_out(data, random_state=0)
    model = SASRec(dim=16, blocks=1, max_len=6, epochs=30, batch_size=16, lr=0.01, device="cpu")
    adv = adversarial_fit(model, split.train, valid=split, eps=0.5, adv_reg=1.0)
    assert adv.adversarial_["method"] == "APR" and adv.adversarial_["pretrain_epochs"] > 0
    df = robustness_curve(adv, split, eps=(0.5,), methods=("fgsm",))
    assert list(df["method"]) == ["clean", "fgsm"] and df["share"].iloc[0] == 1.0
    assert 0 < df["ndcg@10"].iloc[0] <= 1
    valid = robustness_curve(adv, split, eps=(0.5,), methods=("fgsm",), on="valid")  # to choose a defence
    assert valid["ndcg@10"].iloc[0] == pytest.approx(evaluate(adv, split, ks=(10,), on="valid").summary["ndcg@10"])


@pytest.fixture(scope="module")
def unisrec_data():  # type: ignore[no-untyped-def]
    """Cyclic sequences whose items carry fixed text vectors (the sentence encoder is not needed)."""
    X = cyclic_sequences(60, 12, 7, seed=0)
    X.item_features = pd.DataFrame({"text": [f"item {i}" for i in range(X.n_items)]})
    return X


@pytest.fixture()
def text_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32)
    monkeypatch.setattr("advrec.models.unisrec.encode_items", lambda X, *a, **k: (vectors, "test-vectors"))


def _unisrec() -> UniSRec:
    return UniSRec(dim=16, blocks=1, heads=1, dropout=0.0, adaptor_dropout=0.0, max_len=6, epochs=30, batch_size=16,
                   lr=0.01, device="cpu")  # fmt: skip


@pytest.mark.usefixtures("text_vectors")
def test_attacks_perturb_unisrec_adaptor_output_within_eps(unisrec_data) -> None:  # type: ignore[no-untyped-def]
    model = _unisrec().fit(unisrec_data)
    clean = model.embedding_tables()["item"].detach().numpy()
    attacked = attack_embeddings(model, unisrec_data, eps=0.5, method="pgd", steps=5)
    delta = attacked.embedding_tables()["item"].detach().numpy() - clean
    assert np.linalg.norm(delta, axis=1).max() <= 0.5 + 1e-5
    assert np.linalg.norm(delta, axis=1)[1:].min() > 0.1 and np.abs(delta[0]).max() == 0
    # measured: clean 0.007, PGD 2.17 (rows of norm 1.5 moved by 0.44-0.5: the next item is no longer certain)
    assert _loss(attacked, unisrec_data) > 5 * _loss(model, unisrec_data)
    np.testing.assert_array_equal(model.embedding_tables()["item"].detach().numpy(), clean)  # a copy
    users = np.arange(5)
    assert not np.allclose(attacked.score(unisrec_data, users), model.score(unisrec_data, users))


@pytest.mark.usefixtures("text_vectors")
def test_apr_on_unisrec_trains_against_adaptor_perturbations(unisrec_data) -> None:  # type: ignore[no-untyped-def]
    split = leave_last_out(unisrec_data, random_state=0)
    start = _unisrec().fit(split.train, valid=split)
    adv = adversarial_fit(_unisrec(), split.train, valid=split, eps=0.5, adv_reg=1.0, pretrained=start)
    assert adv.adversarial_["method"] == "APR"
    assert adv._batch_table is None  # nothing of the last batch's graph is kept
    diff = adv.embedding_tables()["item"].detach().numpy() - start.embedding_tables()["item"].detach().numpy()
    assert np.abs(diff).max() > 0  # the adaptor kept training
    df = robustness_curve(adv, split, eps=(0.5,), methods=("fgsm",))
    assert list(df["method"]) == ["clean", "fgsm"] and 0 < df["ndcg@10"].iloc[0] <= 1
