"""APR and embedding attacks on SASRec: the item table is perturbed, the loss rises, curves run on leave-last-out."""

import numpy as np
import pytest
import torch

from advrec.data.splits import leave_last_out
from advrec.models import SASRec
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
