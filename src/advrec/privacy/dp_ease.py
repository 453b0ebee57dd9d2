"""User-level DP `EASE`: the Gaussian mechanism on the item Gram matrix ("Analyze Gauss", Dwork et al., STOC 2014).

EASE needs the data only through the item–item Gram matrix. Each user's row is L2-normalised, x̃ = x/‖x‖: the
upper triangle (diagonal included) of x̃x̃ᵀ then has L2 norm √((n+1)/(2n)) for a user of n items (each
off-diagonal pair counted once), so the user's outer product is weighted by w_n = √(2n/(n+1)) (1 for one item,
→ √2 for many) and every user adds exactly L2 norm 1 to the released upper triangle: sensitivity 1 when one user
is added or removed, whatever their history. One symmetric draw of Gaussian noise of std σ per entry
makes that matrix (ε, δ)-DP, σ being calibrated by Opacus's accountant for a single full-batch Gaussian step
(sample rate 1, one step). Everything after is post-processing and costs no budget:

- the top-`gram_rank` eigen-part of the noisy matrix is kept: the noise spreads evenly over all I dimensions
  (spectral norm ≈ 2σ√I), the co-occurrence signal sits in few;
- EASE's closed form with the model's `l2` turns it into the released item–item weights; the diagonal of the
  kept part (`gram_diagonal_`, a popularity in which each user counts by their normalised weight) is released
  with them, as the item prior of a synthetic-data generator (`advrec.privacy.dp.private_generator`).

As with DP-BPR (`advrec.privacy.dp_bpr`) this is a billboard model: only the weights are released, and a user's
scores come from their own history against them, so each user's recommendations are DP with respect to every
other user. On ml-1m the row normalisation alone (no noise) also suits EASE: heavy users stop dominating the
co-occurrences.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions, as_csr
from advrec.errors import ConfigError
from advrec.models import EASE
from advrec.models.torch_base import seed_of
from advrec.privacy import opacus_notes_silenced

GRAM_L2 = 5.0
"""EASE's l2 on the normalised Gram matrix (its entries are far smaller than raw co-occurrence counts): ml-1m
validation picked 1–5 at ε = 8, 5 at ε = 3 and without noise, 20 at ε = 1."""


def gram_noise_multiplier(epsilon: float, delta: float, accountant: str = "rdp") -> float:
    """σ of a single Gaussian mechanism of L2 sensitivity 1 that is (ε, δ)-DP, from Opacus's accountant."""
    from opacus.accountants.utils import get_noise_multiplier

    with opacus_notes_silenced():
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=1.0,
                steps=1,
                accountant=accountant,
                epsilon_tolerance=0.001,
            )
        )


def normalized_gram(X: Interactions | sp.spmatrix) -> np.ndarray:
    """Σ_u w_n x̃x̃ᵀ over the binarised, L2-normalised rows x̃ of `X`, w_n = √(2n/(n+1)) for a user of n items:
    each user's upper triangle has L2 norm exactly 1 (users without interactions add nothing)."""
    m = sp.csr_matrix(as_csr(X, "training data"), dtype=np.float64, copy=True)
    m.data[:] = 1.0
    n = np.diff(m.indptr).astype(np.float64)
    scale = np.where(n > 0, (2.0 * n / np.maximum(n + 1.0, 1.0)) ** 0.25 / np.sqrt(np.maximum(n, 1.0)), 0.0)
    m = sp.diags(scale) @ m
    return np.asarray((m.T @ m).toarray())


def fit_gram_private(
    model: EASE, X: Interactions | sp.spmatrix, noise_multiplier: float, gram_rank: int = 200, random_state: int = 0
) -> EASE:
    """Fits `model` on the noisy normalised Gram matrix (noise std `noise_multiplier` per entry, symmetric).

    `noise_multiplier` 0 gives the same pipeline without noise (the non-private reference); `gram_rank` 0 keeps
    every eigen-dimension."""
    if not model.l2 > 0:
        raise ConfigError(f"l2 must be positive, got {model.l2}")
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ConfigError(f"noise_multiplier must be finite and ≥ 0, got {noise_multiplier}")
    m = model._check_fit_input(X)
    model._set_shape(m)
    gram = normalized_gram(m)
    n = gram.shape[0]
    if not 0 <= gram_rank <= n:
        raise ConfigError(f"gram_rank must lie in [0, {n}] (0 keeps every dimension), got {gram_rank}")
    if noise_multiplier > 0:
        rng = np.random.default_rng(seed_of(random_state))
        noise = np.triu(rng.normal(0.0, noise_multiplier, size=(n, n)))
        gram += noise + np.triu(noise, 1).T
    if 0 < gram_rank < n:
        values, vectors = np.linalg.eigh(gram)
        top = vectors[:, -gram_rank:]
        gram = (top * values[-gram_rank:]) @ top.T
    model.gram_diagonal_ = np.diag(gram).astype(np.float32)  # type: ignore[attr-defined]  # released with B
    gram[np.diag_indices_from(gram)] += model.l2
    P = np.linalg.inv(gram)
    B = P / (-np.diag(P))
    B[np.diag_indices_from(B)] = 0.0
    model.weights_ = B.astype(np.float32)
    return model
