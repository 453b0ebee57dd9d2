import numpy as np
import pytest
import scipy.sparse as sp

from advrec.errors import ConfigError
from advrec.models import (
    ADMMSLIM,
    BPRMF,
    BSPM,
    EASE,
    GFCF,
    SANSA,
    BERT4Rec,
    Ensemble,
    ItemKNN,
    MultVAE,
    Pop,
    RecVAE,
    SASRec,
)
from advrec.models.ials import IALS
from advrec.models.lightgcn import LightGCN
from advrec.testing import check_recommender

FACTORIES = {
    "Pop": (lambda: Pop(), None),
    "ItemKNN": (lambda: ItemKNN(k=10), 0.9),
    "EASE": (lambda: EASE(l2=1.0), 0.9),
    "EASE-float32": (lambda: EASE(l2=1.0, dtype="float32"), 0.9),
    "ADMMSLIM": (lambda: ADMMSLIM(l1=0.1, l2=1.0, alpha=0.0, rho=1.0, iterations=50), 0.9),
    "Ensemble": (lambda: Ensemble([EASE(l2=1.0), ItemKNN(k=10)]), 0.9),
    "SANSA": (lambda: SANSA(l2=1.0, density=0.1), 0.9),
    "SANSA-cholmod": (lambda: SANSA(l2=1.0, density=0.1, factorizer="cholmod"), 0.9),
    "GFCF": (lambda: GFCF(k=4), 0.9),
    "GFCF-pruned": (lambda: GFCF(k=4, max_neighbors=5), 0.9),
    "BSPM": (lambda: BSPM(k=4), 0.9),
    "BSPM-late-euler": (lambda: BSPM(k=4, merge="late", sharpen_solver="euler", K_s=2), 0.9),
    # 40 users × 20 items at density 0.5: most unseen items of a user's own community are positives in disguise,
    # which a large pool of hard negatives pushes down (8 candidates: 0.78), so 2 here; uniform for adagrad
    "BPRMF": (lambda: BPRMF(factors=8, epochs=30, batch_size=64, lr=0.02, negative_pool=2, device="cpu"), 0.9),
    "BPRMF-adagrad": (
        lambda: BPRMF(factors=8, epochs=30, batch_size=64, lr=0.1, optimizer="adagrad", negative_pool=1, device="cpu"),
        0.9,
    ),
    "BPRMF-sparse_adam": (
        lambda: BPRMF(
            factors=8, epochs=30, batch_size=64, lr=0.02, negative_pool=2, optimizer="sparse_adam", device="cpu"
        ),
        0.9,
    ),
    "MultVAE": (lambda: MultVAE(hidden=16, latent=4, epochs=40, batch_size=8, lr=0.01, device="cpu"), 0.9),
    "RecVAE": (lambda: RecVAE(hidden=16, latent=4, depth=2, epochs=20, batch_size=8, lr=0.01, device="cpu"), 0.9),
    # the community data's timestamps follow item order, so the next item after a user's latest is usually the
    # other community's first: a sequential model is right to rank it high (its known answer: test_sasrec.py)
    "SASRec": (lambda: SASRec(dim=16, blocks=1, max_len=10, epochs=5, batch_size=8, lr=0.01, device="cpu"), None),
    "BERT4Rec": (lambda: BERT4Rec(dim=16, blocks=1, max_len=10, epochs=5, batch_size=8, lr=0.01, device="cpu"), None),
    "IALS": (lambda: IALS(factors=8, reg=5.0, iterations=10, device="cpu"), 0.9),
    "LightGCN": (lambda: LightGCN(factors=8, layers=2, epochs=30, batch_size=64, lr=0.01, device="cpu"), 0.9),
    "LightGCN-pool": (
        lambda: LightGCN(factors=8, layers=2, epochs=30, batch_size=64, lr=0.01, negative_pool=2, device="cpu"),
        0.9,
    ),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_conformance(name, tmp_path):
    if name.startswith("SANSA"):
        pytest.importorskip("sansa", reason="SANSA needs the sansa package (and SuiteSparse)")
    make, min_accuracy = FACTORIES[name]
    check_recommender(make, tmp_path, min_accuracy=min_accuracy)


def test_bprmf_rejects_an_unknown_optimizer(toy):
    model = BPRMF(epochs=1, device="cpu")
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        model.set_params(optimizer="sgdx")
    model.optimizer = "sgdx"
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        model.fit(toy)


def test_bprmf_optimizer_changes_training(toy):
    """Same seed and settings, another optimizer: other embeddings (the option is not ignored)."""
    make = lambda opt: BPRMF(factors=4, epochs=3, batch_size=8, lr=0.05, optimizer=opt, device="cpu")  # noqa: E731
    adam, adagrad = make("adam").fit(toy).embeddings()[0], make("adagrad").fit(toy).embeddings()[0]
    assert np.abs(adam - adagrad).max() > 1e-4


@pytest.fixture
def toy() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    return sp.csr_matrix((rng.random((20, 15)) < 0.3).astype(np.float32))
