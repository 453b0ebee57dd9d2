"""Distance to the closest record (DCR): does synthetic data sit closer to the real training users than to
real users the generator never saw?

Users are sets of items; distance is the Jaccard distance 1 − |a ∩ b| / |a ∪ b|. For each synthetic user the
distance to the closest training user and to the closest holdout user (a same-size sample of real users not
used for training) are compared: a generator that copies its training data puts synthetic users much closer
to training users (share closer to train > 0.5, train DCRs near 0). The membership attack on synthetic data
scores each real user by −(distance to its closest synthetic user): its AUC for training vs holdout users is
0.5 when the release does not single out its training users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.errors import DataError
from advrec.evaluation.report import pyplot, save_figure
from advrec.privacy.membership import _auc, binary


def closest_distance(a: sp.spmatrix, b: sp.spmatrix, block: int = 1024) -> np.ndarray:
    """For each row of `a`, the Jaccard distance to its closest row of `b` (0/1 rows over one item set)."""
    a, b = binary(a), binary(b)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"the two datasets have {a.shape[1]} and {b.shape[1]} items; DCR needs one item catalogue")
    if b.shape[0] == 0:
        raise DataError("the reference dataset of the distance is empty")
    size_a, size_b = np.diff(a.indptr), np.diff(b.indptr)
    bt = b.T.tocsc()
    out = np.empty(a.shape[0], dtype=np.float64)
    for start in range(0, a.shape[0], block):
        stop = min(start + block, a.shape[0])
        inter = np.asarray((a[start:stop] @ bt).toarray(), dtype=np.float64)
        union = size_a[start:stop, None] + size_b[None, :] - inter
        sim = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)  # two empty rows are alike
        out[start:stop] = 1.0 - sim.max(axis=1)
    return out


@dataclass
class DCRReport:
    """DCR distributions and the distance-based membership attack on a synthetic release."""

    synth_to_train: np.ndarray
    synth_to_holdout: np.ndarray
    train_to_synth: np.ndarray
    holdout_to_synth: np.ndarray

    @property
    def share_closer_to_train(self) -> float:
        """Share of synthetic users strictly closer to a training user than to any holdout user (ties count ½)."""
        closer = (self.synth_to_train < self.synth_to_holdout).mean()
        ties = (self.synth_to_train == self.synth_to_holdout).mean()
        return float(closer + 0.5 * ties)

    @property
    def attack_auc(self) -> float:
        labels = np.r_[np.ones(len(self.train_to_synth)), np.zeros(len(self.holdout_to_synth))]
        return _auc(labels, -np.r_[self.train_to_synth, self.holdout_to_synth])

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_dcr_synth_to_train": float(np.median(self.synth_to_train)),
            "median_dcr_synth_to_holdout": float(np.median(self.synth_to_holdout)),
            "p05_dcr_synth_to_train": float(np.quantile(self.synth_to_train, 0.05)),
            "p05_dcr_synth_to_holdout": float(np.quantile(self.synth_to_holdout, 0.05)),
            "exact_copies": int((self.synth_to_train == 0).sum()),
            "share_closer_to_train": self.share_closer_to_train,
            "dcr_attack_auc": self.attack_auc,
        }

    def plot(self, path: str | Path, title: str = "Distance to closest record") -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.linspace(0, 1, 41).tolist()
        ax.hist(self.synth_to_train, bins=bins, alpha=0.6, density=True, label="synthetic → train")
        ax.hist(self.synth_to_holdout, bins=bins, alpha=0.6, density=True, label="synthetic → holdout")
        ax.set_xlabel("Jaccard distance to the closest real user")
        ax.set_ylabel("density")
        ax.set_title(f"{title} (attack AUC {self.attack_auc:.3f})")
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)


def dcr_audit(synthetic: sp.spmatrix, train: sp.spmatrix, holdout: sp.spmatrix) -> DCRReport:
    """DCR of a synthetic dataset against its generator's training users and same-size holdout users."""
    s, t, h = binary(synthetic), binary(train), binary(holdout)
    s, t, h = (m[np.diff(m.indptr) > 0] for m in (s, t, h))
    if min(s.shape[0], t.shape[0], h.shape[0]) == 0:
        raise DataError("synthetic, train and holdout users must each be non-empty")
    return DCRReport(
        synth_to_train=closest_distance(s, t),
        synth_to_holdout=closest_distance(s, h),
        train_to_synth=closest_distance(t, s),
        holdout_to_synth=closest_distance(h, s),
    )
