"""Robust aggregation against poisoned clients: Flower's own strategies, and an outlier filter on the updates.

`DEFENCES` maps a name to a Flower strategy class whose `aggregate_train` replaces FedAvg's weighted mean: Krum and
Multi-Krum (Blanchard et al. 2017: the replies closest to their neighbours), the coordinate-wise median and trimmed
mean (Yin et al. 2018), Bulyan (El Mhamdi et al. 2018), and `OutlierFilter`, which carries the shilling detector's
idea (`advrec.robustness.detect`: describe each profile by a few features, drop the outliers) from profiles to
updates. A server optimiser (FedAdam, FedYogi) reads the robust aggregate as it reads the mean.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

Z_CUT = 3.5  # robust z-score (median and MAD) above which an update is dropped (Iglewicz & Hoaglin's cut)


def update_features(arrays: list[list[np.ndarray]]) -> np.ndarray:
    """Per reply (rows: replies): the distance of its arrays to the coordinate-wise median of all replies, and the
    largest share of that deviation's squared norm held by one row of one array (a push on a few items)."""
    feats = np.zeros((len(arrays), 2))
    for layer in zip(*arrays, strict=True):
        stacked = np.stack(layer).reshape(len(layer), layer[0].shape[0], -1)  # the replies' dtype (float32)
        dev = stacked - np.median(stacked, axis=0)
        rows = np.einsum("rij,rij->ri", dev, dev, dtype=np.float64)  # (replies, rows), summed in float64
        feats[:, 0] += rows.sum(1)
        feats[:, 1] = np.maximum(feats[:, 1], rows.max(1))
    feats[:, 1] /= np.maximum(feats[:, 0], 1e-300)
    feats[:, 0] = np.sqrt(feats[:, 0])
    return feats


def outliers(features: np.ndarray, cut: float = Z_CUT) -> np.ndarray:
    """Rows whose value of any feature lies above median + cut · 1.4826 · MAD (only the high side is suspect)."""
    med = np.median(features, axis=0)
    mad = 1.4826 * np.median(np.abs(features - med), axis=0)
    z = (features - med) / np.maximum(mad, 1e-12 * np.maximum(np.abs(med), 1.0))
    return np.flatnonzero((z > cut).any(axis=1))


class OutlierFilter(FedAvg):
    """FedAvg over the replies left after dropping those whose update is an outlier (`update_features`,
    `outliers`); the number dropped each round is reported as the metric "dropped"."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if len(valid) < 3:
            return super().aggregate_train(server_round, valid)
        key = next(iter(valid[0].content.array_records))
        arrays = [msg.content.array_records[key].to_numpy_ndarrays() for msg in valid]
        drop = set(outliers(update_features(arrays)).tolist())
        kept = [msg for i, msg in enumerate(valid) if i not in drop]
        out, metrics = super().aggregate_train(server_round, kept)
        if metrics is not None:
            metrics["dropped"] = len(drop)
        return out, metrics


DEFENCES: dict[str, type[FedAvg]] = {
    "krum": Krum,
    "multikrum": MultiKrum,
    "median": FedMedian,
    "trimmed-mean": FedTrimmedAvg,
    "bulyan": Bulyan,
    "outlier-filter": OutlierFilter,
}


def configure(strategy: Any, defence: str, assumed_malicious: int, trim: float) -> None:
    """Sets a defence's own parameters on a constructed strategy: the malicious nodes Krum / Multi-Krum / Bulyan
    assume, the share trimmed from each side by the trimmed mean."""
    if defence in ("krum", "multikrum", "bulyan"):
        strategy.num_malicious_nodes = assumed_malicious
    if defence == "trimmed-mean":
        strategy.beta = trim
