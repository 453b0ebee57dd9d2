"""Synthetic data release: a generator trained (with or without DP) on real users, sampled into new users over
the same item catalogue, written as Parquet with a manifest.

The release holds synthetic user ids ("s000000", ...) only: no real user id, no real row. With a finite ε the
generator is the DP-SGD-trained MultVAE decoder (optionally from a DP popularity prior) with the standard-normal prior
and a DP profile-size distribution (`advrec.privacy.dp.private_generator`), so the whole release is (ε, δ)-DP
at the user level. `generator="ease"` grows users from EASE weights fitted on a Gram matrix released by the
Gaussian mechanism (`advrec.privacy.dp_ease`), starting from that matrix's diagonal as item prior; on ml-1m it
keeps far more utility than the DP-SGD VAE at the same ε (see `benchmarks/results/privacy.md`).

`generator="gan"` samples from a user-based CFGAN (`ProfileGenerator`), whose generator is conditioned on
histories. At ε = ∞ it trains on, and conditions on, the real training users, so every synthetic user derives
from one real user (the DCR audit shows how close it stays to them). At a finite ε it never sees a real user: it
trains on, and conditions on, the users of a DP-EASE release of that ε, so the GAN's release is (ε, δ)-DP by
post-processing. (A GAN whose discriminator is itself trained with DP-SGD is not offered.)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.data.interactions import IdMap, Interactions
from advrec.errors import ConfigError
from advrec.io import atomic_write_parquet, atomic_write_text, to_jsonable
from advrec.models import CFGAN, EASE, MultVAE, Recommender
from advrec.models.torch_base import seed_of
from advrec.privacy.dp_ease import GRAM_L2

GENERATORS = ("vae", "gan", "ease")
VAE_DEFAULTS: dict[str, Any] = {"hidden": 600, "latent": 64, "dropout": 0.5, "epochs": 50, "batch_size": 500}
"""Generator settings of the release (no early stopping: a validation split would need more real users)."""
EASE_DEFAULTS: dict[str, Any] = {"l2": GRAM_L2}
"""EASE on the normalised Gram matrix (each user's rows L2-normalised), so its l2 is on that matrix's scale."""
GAN_DEFAULTS: dict[str, Any] = {"mode": "user", "epochs": 200}
"""User-based CFGAN (it generates rows for any history), the other settings CFGAN's defaults."""


@dataclass
class SyntheticRelease:
    """Synthetic interactions (synthetic user ids, the real item catalogue) and what produced them."""

    data: Interactions
    manifest: dict[str, Any] = field(default_factory=dict)

    def save(self, out: str | Path) -> Path:
        """Writes interactions.parquet (user, item), items.parquet (the catalogue) and manifest.json to `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        coo = self.data.matrix.tocoo()
        frame = pd.DataFrame(
            {
                "user": self.data.users.raw(coo.row.astype(np.int64)),
                "item": self.data.items.raw(coo.col.astype(np.int64)),
            }
        )
        atomic_write_parquet(out / "interactions.parquet", frame)
        items = self.data.items.to_frame()
        if self.data.item_features is not None:
            for col in ("title", "genres"):
                if col in self.data.item_features:
                    items[col] = self.data.item_features[col].to_numpy()
        atomic_write_parquet(out / "items.parquet", items)
        atomic_write_text(out / "manifest.json", json.dumps(to_jsonable(self.manifest), indent=2, default=str))
        return out


def check_generator(generator: str) -> None:
    """Raises `ConfigError` for a generator the release does not offer."""
    if generator not in GENERATORS:
        raise ConfigError(f"generator must be one of {', '.join(GENERATORS)}, not {generator!r}")


def holdout_mask(n_users: int, share: float, seed: int) -> np.ndarray:
    """Users kept out of the generator's training (True), chosen at random from `seed`; share 0 keeps none."""
    mask = np.zeros(n_users, dtype=bool)
    if share > 0:
        mask[np.random.default_rng(seed).permutation(n_users)[: round(share * n_users)]] = True
    return mask


def synthesize(
    X: Interactions,
    generator: str = "vae",
    epsilon: float = math.inf,
    n_users: int | None = None,
    delta: float | None = None,
    params: dict[str, Any] | None = None,
    holdout: float = 0.0,
    source: dict[str, Any] | None = None,
    popularity_share: float = 0.0,
    random_state: Any = 0,
) -> SyntheticRelease:
    """Trains a generator on the users of `X` and samples `n_users` synthetic users (default: as many as `X`).

    `holdout`: a share of real users left out of training, for the DCR audit (`advrec audit` re-derives them from
    the seed in the manifest; no id is written). `source`: how `X` was loaded (name, min_rating, core), recorded.
    `popularity_share`: share of ε for the generator's DP popularity prior (helps at ε = 8, hurts at ε = 1)."""
    from advrec.privacy.dp import private_generator

    if not epsilon > 0:
        raise ConfigError(f"epsilon must be positive (inf for no DP), got {epsilon}")
    check_generator(generator)
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must lie in [0, 1), got {holdout}")
    n_users = int(n_users if n_users is not None else X.n_users)
    if n_users < 1:
        raise ConfigError(f"n_users must be ≥ 1, got {n_users}")
    model_class: type[Recommender] = {"vae": MultVAE, "gan": CFGAN, "ease": EASE}[generator]
    unknown = sorted(set(params or {}) - set(model_class._param_names()) - {"random_state"})
    if unknown:
        raise ConfigError(
            f"the {generator} generator ({model_class.__name__}) has no parameter {', '.join(map(repr, unknown))}; "
            f"parameters: {model_class._param_names()}"
        )
    seed = seed_of(random_state)
    held = holdout_mask(X.n_users, holdout, seed)
    train = X.matrix[~held] if held.any() else X.matrix
    t0 = time.perf_counter()
    dp_model = None  # the model that holds the DP record, when it is not the sampled one
    if generator == "gan":
        from advrec.generative import ProfileGenerator
        from advrec.privacy.dp import GeneratorBudget

        cfgan = CFGAN(**{**GAN_DEFAULTS, **(params or {}), "random_state": seed})
        if cfgan.mode != "user":
            raise ConfigError("the gan generator is a user-based CFGAN: mode must be 'user'")
        if math.isinf(epsilon):
            gen, budget = ProfileGenerator(cfgan).fit(train), GeneratorBudget(math.inf, 0.0, math.inf, math.inf)
        else:  # the GAN learns from, and conditions on, a DP-EASE release only
            base, budget = private_generator(train, epsilon, delta=delta, model=EASE(l2=GRAM_L2), random_state=seed)
            dp_model = base.model
            n_active = int((np.diff(sp.csr_matrix(train).indptr) > 0).sum())
            gen = ProfileGenerator(cfgan).fit(base.sample(n_active, random_state=seed + 2))
    elif generator == "ease":
        gen, budget = private_generator(
            train, epsilon, delta=delta, model=EASE(**{**EASE_DEFAULTS, **(params or {})}), random_state=seed
        )
    else:
        vae_params = {**VAE_DEFAULTS, **(params or {}), "random_state": seed}
        gen, budget = private_generator(
            train, epsilon, delta=delta, model=MultVAE(**vae_params), popularity_share=popularity_share,
            random_state=seed,
        )  # fmt: skip
    fit_s = time.perf_counter() - t0
    rows = gen.sample(n_users, random_state=seed + 1)
    width = max(6, len(str(n_users - 1)))
    users = IdMap(np.array([f"s{i:0{width}d}" for i in range(n_users)]), "user")
    item_features = X.item_features
    data = Interactions(
        sp.csr_matrix(rows, dtype=np.float32), users, X.items, item_features=item_features, name=f"{X.name}-synthetic"
    )
    net = gen.model  # MultVAE, CFGAN or EASE
    if isinstance(net, MultVAE):
        prior = gen.prior
    elif isinstance(net, EASE):
        prior = "item prior: real item frequencies" if math.isinf(epsilon) else "item prior: the DP Gram diagonal"
    elif math.isinf(epsilon):
        prior = "none: conditioned on real training histories"
    else:
        prior = "none: trained on and conditioned on the users of a DP-EASE release (no real history)"
    dp = dp_model if dp_model is not None else net
    record = dp.privacy_
    manifest = {
        "kind": "synthetic interactions",
        "source_dataset": {
            "name": X.name,
            **(source or {}),
            "users": X.n_users,
            "items": X.n_items,
            "interactions": X.nnz,
        },
        "holdout": {"share": holdout, "seed": seed, "users": int(held.sum())},
        "generator": {
            "name": generator,
            "class": type(net).__name__,
            "params": net.get_params(),
            "prior": prior,
            "temperature": gen.temperature,
        },
        "privacy": {
            "epsilon": budget.epsilon,
            "delta": budget.delta,
            "unit": "user (add/remove one user's whole history)",
            "epsilon_sgd": record.epsilon_sgd if record else None,
            "epsilon_gram": record.epsilon if record and isinstance(dp, EASE) else None,
            "gram_rank": record.gram_rank if record else None,
            "epsilon_popularity": record.epsilon_popularity if record else None,
            "epsilon_profile_sizes": budget.epsilon_sizes,
            "noise_multiplier": record.noise_multiplier if record else None,
            "max_grad_norm": record.max_grad_norm if record else None,
            "sample_rate": record.sample_rate if record else None,
            "steps": record.steps if record else None,
            "accountant": record.accountant if record else None,
            "composition": "basic: ε = ε_model (SGD + popularity, or Gram) + ε_profile_sizes",
        },
        "users": n_users,
        "interactions": int(rows.nnz),
        "seed": seed,
        "wall_seconds": {"fit": fit_s, "total": time.perf_counter() - t0},
    }
    return SyntheticRelease(data, manifest)
