"""Typed records that training plug-ins leave on a model, saved and loaded with it (JSON in params.json)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from advrec.errors import ModelFileError

# attributes of model files written before the record existed, and the record field each one became
LEGACY_PRIVACY_ATTRIBUTES = {
    "epsilon_": "epsilon", "epsilon_sgd_": "epsilon_sgd", "epsilon_popularity_": "epsilon_popularity",
    "delta_": "delta", "noise_multiplier_": "noise_multiplier", "max_grad_norm_": "max_grad_norm",
    "sample_rate_": "sample_rate", "dp_steps_": "steps", "accountant_": "accountant", "dp_scope_": "scope",
    "gram_rank_": "gram_rank", "dp_method_": "method", "epsilon_sizes_": "epsilon_sizes",
    "release_users_": "release_users",
}  # fmt: skip


@dataclass(frozen=True)
class PrivacyRecord:
    """The differential-privacy guarantee a model was trained under (unit: one user's whole history).

    `epsilon` is the total at `delta`; `epsilon_sgd`, `epsilon_popularity`, `epsilon_sizes` are its parts when it
    was composed (basic composition). `mechanism` says what was noised, `accountant` how ε was computed from
    (`noise_multiplier`, `sample_rate`, `steps`); `scope` what the guarantee covers when it is not the whole model.
    """

    epsilon: float
    delta: float
    mechanism: str
    accountant: str
    noise_multiplier: float
    steps: int
    sample_rate: float = 1.0
    max_grad_norm: float = 1.0
    epsilon_sgd: float | None = None
    epsilon_popularity: float | None = None
    epsilon_sizes: float | None = None
    scope: str | None = None
    gram_rank: int | None = None
    method: str = "sgd"
    release_users: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, as JSON values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "privacy record") -> PrivacyRecord:
        """A record from `as_dict`'s output; `ModelFileError` naming what is missing or not a field."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ModelFileError(f"{where}: {unknown[0]!r} is not a field of a privacy record ({sorted(names)})")
        try:
            record = cls(**values)
        except TypeError as exc:
            raise ModelFileError(f"{where}: {exc}") from None
        if not (isinstance(record.epsilon, int | float) and record.epsilon >= 0 and not math.isnan(record.epsilon)):
            raise ModelFileError(f"{where}: epsilon is {record.epsilon!r}, expected a number ≥ 0")
        return record


def privacy_from_legacy(state: dict[str, Any]) -> PrivacyRecord | None:
    """The record of a model file that stored the guarantee as loose attributes (`epsilon_`, …); pops them."""
    if "epsilon_" not in state:
        return None
    values = {field: state.pop(attr) for attr, field in LEGACY_PRIVACY_ATTRIBUTES.items() if attr in state}
    values.setdefault("accountant", "rdp")
    values.setdefault("noise_multiplier", math.nan)
    values.setdefault("steps", 0)
    values.setdefault("delta", 0.0)
    values["mechanism"] = "DP-SGD (Opacus)" if values.get("method", "sgd") == "sgd" else "synthetic release"
    return PrivacyRecord.from_dict(values)
