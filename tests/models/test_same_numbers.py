"""Every trained model gives the numbers it gave before, at the same seed, on a tiny fixed dataset.

The expected numbers (per-epoch losses, validation NDCG@10, a fingerprint of the scores, privacy records) are in
`tests/data/model_numbers.json`. They were written by this file (`python tests/models/test_same_numbers.py`)
from the implementation before the training loop was unified; rewrite them only for a change that is meant to
change a model's numbers, and say so in the commit.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from advrec.data.splits import ratio_split
from advrec.models import BPRMF, CFGAN, IALS, IRGAN, MultVAE, Recommender
from advrec.testing import two_communities

EXPECTED = Path(__file__).resolve().parent.parent / "data" / "model_numbers.json"
RTOL = 1e-5  # float32 training: a reordered sum may move the last bits, nothing more


def _data() -> tuple[Any, Any]:
    X = two_communities(48, 24, density=0.4, random_state=3)
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=5)
    return X, split


def _fingerprint(model: Recommender, X: Any) -> dict[str, Any]:
    scores = model.score(X, np.arange(X.n_users)).astype(np.float64)
    out: dict[str, Any] = {
        "score_sum": float(scores.sum()),
        "score_abs_sum": float(np.abs(scores).sum()),
        "scores_head": [float(v) for v in scores[:3, :4].ravel()],
    }
    log = getattr(model, "training_log_", None)
    if log is not None:
        keys = ("loss", "valid_ndcg@10", "d_loss", "g_loss")
        out["log"] = [{k: float(r[k]) for k in keys if k in r} for r in log]
    return out


def _privacy(model: Recommender) -> dict[str, Any]:
    from advrec.privacy.dp import privacy_manifest

    record = privacy_manifest(model)
    keep = ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "max_grad_norm")
    return {k: float(v) for k, v in record.items() if k in keep}


def case_bprmf() -> dict[str, Any]:
    X, split = _data()
    m = BPRMF(factors=8, epochs=4, batch_size=64, eval_every=1, patience=10, device="cpu", random_state=7)
    return _fingerprint(m.fit(split.train, valid=split), X)


def case_bprmf_sparse_adam_uniform() -> dict[str, Any]:
    X, split = _data()
    m = BPRMF(factors=8, epochs=3, batch_size=50, optimizer="sparse_adam", negative_pool=1, device="cpu",
              random_state=7)  # fmt: skip
    return _fingerprint(m.fit(split.train), X)


def case_bprmf_adagrad() -> dict[str, Any]:
    X, split = _data()
    m = BPRMF(factors=8, epochs=3, batch_size=50, optimizer="adagrad", lr=0.05, device="cpu", random_state=7)
    return _fingerprint(m.fit(split.train), X)


def case_multvae() -> dict[str, Any]:
    X, split = _data()
    m = MultVAE(hidden=16, latent=4, epochs=4, batch_size=16, patience=10, device="cpu", random_state=7)
    return _fingerprint(m.fit(split.train, valid=split), X)


def case_multvae_activity_groups() -> dict[str, Any]:
    X, split = _data()
    m = MultVAE(hidden=16, latent=4, epochs=3, batch_size=16, sampling="activity", device="cpu", random_state=7)
    m.user_groups_ = (np.arange(X.n_users) % 3 - 1).astype(np.int64)
    return _fingerprint(m.fit(split.train), X)


def case_cfgan() -> dict[str, Any]:
    X, split = _data()
    m = CFGAN(epochs=3, g_steps=2, d_steps=1, g_hidden=(16,), d_hidden=(8,), batch_size=16, d_batch_size=16,
              device="cpu", random_state=7)  # fmt: skip
    return _fingerprint(m.fit(split.train, valid=split), X)


def case_cfgan_wgan_user() -> dict[str, Any]:
    X, split = _data()
    m = CFGAN(mode="user", loss="wgan-gp", scheme="ZR", epochs=2, g_hidden=(16,), d_hidden=(8,), batch_size=16,
              d_batch_size=16, clip_grad=1.0, lr_decay=0.9, device="cpu", random_state=7)  # fmt: skip
    return _fingerprint(m.fit(split.train), X)


def case_irgan() -> dict[str, Any]:
    X, split = _data()
    m = IRGAN(factors=4, pretrain_epochs=3, d_warmup=2, d_steps=1, g_steps=1, epochs=2, batch_size=16,
              device="cpu", random_state=7)  # fmt: skip
    return _fingerprint(m.fit(split.train, valid=split), X)


def case_apr() -> dict[str, Any]:
    from advrec.robustness.perturb import adversarial_fit

    X, split = _data()
    m = BPRMF(factors=8, epochs=3, batch_size=64, device="cpu", random_state=7)
    return _fingerprint(adversarial_fit(m, split.train, eps=0.3, adv_reg=1.0), X)


def case_dp_multvae() -> dict[str, Any]:
    from advrec.privacy.dp import fit_private

    X, split = _data()
    m = MultVAE(hidden=16, latent=4, epochs=3, batch_size=16, device="cpu", random_state=7)
    fit_private(m, split.train, noise_multiplier=1.0, max_grad_norm=1.0)
    return {**_fingerprint(m, X), "privacy": _privacy(m)}


def case_dp_multvae_hooks_epsilon() -> dict[str, Any]:
    from advrec.privacy.dp import fit_private

    X, split = _data()
    m = MultVAE(hidden=16, latent=4, epochs=2, batch_size=16, device="cpu", random_state=7)
    fit_private(m, split.train, epsilon=20.0, clipping="hooks", physical_batch_size=8, popularity_epsilon=1.0)
    return {**_fingerprint(m, X), "privacy": _privacy(m)}


def case_dp_bpr() -> dict[str, Any]:
    from advrec.privacy.dp import fit_private

    X, split = _data()
    m = BPRMF(factors=8, epochs=3, batch_size=16, device="cpu", random_state=7)
    fit_private(m, split.train, noise_multiplier=1.0, max_grad_norm=0.05)
    return {**_fingerprint(m, X), "privacy": _privacy(m)}


def case_attribute_adversary() -> dict[str, Any]:
    from advrec.privacy.adversarial import erase_attribute, fit_adversarial

    X, split = _data()
    labels = {"g": (np.arange(X.n_users) % 2).astype(np.int64)}
    m = MultVAE(hidden=16, latent=4, epochs=2, batch_size=16, device="cpu", random_state=7)
    fit_adversarial(m, split.train, labels, lam=1.0, n_heads=2, head_steps=2)
    out = _fingerprint(m, X)
    erase_attribute(m, split.train, labels, finetune_epochs=2, valid=split)
    out["erased"] = _fingerprint(m, X)
    return out


def case_ials() -> dict[str, Any]:
    X, split = _data()
    m = IALS(factors=8, iterations=3, device="cpu", random_state=7)
    return _fingerprint(m.fit(split.train, valid=split), X)


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    name[len("case_") :]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}


def _close(expected: Any, actual: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{where}: keys {set(actual)}"
        for k in expected:
            _close(expected[k], actual[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: length {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _close(e, a, f"{where}[{i}]")
    else:
        ok = math.isclose(actual, expected, rel_tol=RTOL, abs_tol=1e-6) or (math.isnan(actual) and math.isnan(expected))
        assert ok, f"{where}: {actual!r}, expected {expected!r}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_numbers(name: str) -> None:
    expected = json.loads(EXPECTED.read_text())
    assert name in expected, f"no stored numbers for {name}: run python {__file__}"
    _close(expected[name], CASES[name](), name)


if __name__ == "__main__":  # writes the expected numbers (see the module docstring)
    import torch

    torch.set_num_threads(1)
    names = sys.argv[1:] or sorted(CASES)
    stored = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    for n in names:
        stored[n] = CASES[n]()
        print(n, "done")
    EXPECTED.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
