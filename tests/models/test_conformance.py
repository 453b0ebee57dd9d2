import pytest

from advrec.errors import ConfigError
from advrec.models import BPRMF, EASE, ItemKNN, MultVAE, Pop
from advrec.testing import check_recommender

FACTORIES = {
    "Pop": (lambda: Pop(), None),
    "ItemKNN": (lambda: ItemKNN(k=10), 0.9),
    "EASE": (lambda: EASE(l2=1.0), 0.9),
    "BPRMF": (lambda: BPRMF(factors=8, epochs=30, batch_size=64, lr=0.02, device="cpu"), 0.9),
    "BPRMF-adagrad": (
        lambda: BPRMF(factors=8, epochs=30, batch_size=64, lr=0.1, optimizer="adagrad", device="cpu"),
        0.9,
    ),
    "MultVAE": (lambda: MultVAE(hidden=16, latent=4, epochs=40, batch_size=8, lr=0.01, device="cpu"), 0.9),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_conformance(name, tmp_path):
    make, min_accuracy = FACTORIES[name]
    check_recommender(make, tmp_path, min_accuracy=min_accuracy)


def test_bprmf_rejects_an_unknown_optimizer():
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        BPRMF(optimizer="sgdx")
