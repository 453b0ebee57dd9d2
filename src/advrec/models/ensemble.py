"""`Ensemble`: a weighted sum of member models' per-user normalised scores, its weights tuned on validation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from advrec.data.interactions import Interactions
from advrec.data.splits import EvalSet, Split
from advrec.errors import ConfigError, ModelFileError
from advrec.evaluation.metrics import ranking_metrics
from advrec.evaluation.ranking import DEFAULT_MEMORY_BUDGET, entry_positions, top_k, users_per_chunk
from advrec.io import ARRAYS_FILE, PARAMS_FILE, write_model
from advrec.models.base import Learned, Recommender, model_class
from advrec.models.params import Interval, Options, declare
from advrec.models.torch_base import as_eval_set, parse_metric

NORMALIZATIONS = ("zscore", "minmax", "rank")
MEMBERS_DIR = "members"
MAX_GRID = 5000  # weight vectors tried at most when tuning


def normalize_scores(scores: np.ndarray, seen: sp.csr_matrix, how: str = "zscore") -> np.ndarray:
    """Each row of `scores` rescaled over the items its user has not seen (`seen`: the users' history rows).

    - "zscore": (s − mean) / std over the unseen items (0 where the std is 0);
    - "minmax": (s − min) / (max − min) over the unseen items (0 where they are all equal);
    - "rank": the unseen items' ranks scaled to [0, 1] (1 the best, ties averaged); seen items get 0.

    The seen items take the same affine map (z-score, min-max) but never count in the statistics. A row with no
    unseen item is all 0. Returns float32.
    """
    s = np.asarray(scores, dtype=np.float64)
    unseen = np.ones(s.shape, dtype=bool)
    unseen[entry_positions(seen)] = False
    count = unseen.sum(axis=1, keepdims=True)
    has = count > 0
    if how == "rank":
        r = rankdata(np.where(unseen, s, -np.inf), axis=1, method="average")
        n_seen = s.shape[1] - count
        out = np.where(unseen, (r - n_seen - 1) / np.maximum(count - 1, 1), 0.0)
        out[(count == 1).ravel()] = np.where(unseen[(count == 1).ravel()], 1.0, 0.0)
    elif how == "minmax":
        lo = np.where(unseen, s, np.inf).min(axis=1, keepdims=True)
        hi = np.where(unseen, s, -np.inf).max(axis=1, keepdims=True)
        span = np.where(has, hi - lo, 0.0)
        out = np.where(span > 0, (s - np.where(has, lo, 0.0)) / np.where(span > 0, span, 1.0), 0.0)
    elif how == "zscore":
        n = np.maximum(count, 1)
        mean = np.where(unseen, s, 0.0).sum(axis=1, keepdims=True) / n
        std = np.sqrt((np.where(unseen, s - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / n)
        out = np.where(std > 0, (s - mean) / np.where(std > 0, std, 1.0), 0.0)
    else:
        raise ConfigError(f"normalize must be one of {list(NORMALIZATIONS)}, got {how!r}")
    out[~has.ravel()] = 0.0
    return out.astype(np.float32)


def simplex_grid(n: int, step: float) -> np.ndarray:
    """Every weight vector of `n` non-negative multiples of `step` summing to 1, one per row (lexicographic,
    the first member's weight descending: (1, 0, …) first)."""
    parts = round(1.0 / step)
    if not np.isclose(parts * step, 1.0):
        raise ConfigError(f"grid_step must divide 1 (e.g. 0.1, 0.25), got {step}")

    def compositions(total: int, k: int) -> Iterator[tuple[int, ...]]:
        if k == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in compositions(total - first, k - 1):
                yield (first, *rest)

    from math import comb

    size = comb(parts + n - 1, n - 1)
    if size > MAX_GRID:
        raise ConfigError(
            f"a simplex grid of step {step} over {n} members has {size:,} weight vectors (at most {MAX_GRID:,}); "
            "raise grid_step or pass weights"
        )
    return np.array(list(compositions(parts, n)), dtype=np.float64) / parts


class Ensemble(Recommender):
    """Score-level ensemble: score(u, i) = Σ_m w_m · norm_u(s_m(u, ·))_i.

    Each member m scores every item for user u; `normalize` rescales those scores per user over the items u
    has not seen ("zscore", the default; "minmax"; "rank", see `normalize_scores`), so that members on
    different scales add up; the weights w (non-negative, summing to 1) then mix them.

    `fit(X, valid=...)` fits the members that are not fitted yet (all of them with `refit=True`), passing
    `valid` on for early stopping. Without `weights`, a validation set chooses them: every vector of the
    simplex grid of step `grid_step` is scored on `tune_metric` (NDCG@10 by default) over the validation users,
    a batch of users at a time (each member scores a batch once; no users×items matrix of all users), and the
    best one is kept (the first in grid order on ties); with neither, the members weigh the same.
    Members of weight 0 are not scored. Saved with each member in `members/<i>/` (its own model files) and
    the member classes named in params.json.
    """

    _parameter_constraints = declare(
        members=[list, tuple],
        weights=[None, list, tuple],
        normalize=[Options(NORMALIZATIONS)],
        grid_step=[Interval(float, 0, 1, closed="right")],
        tune_metric=[str],
        refit=[bool],
    )
    _required_state: ClassVar[dict[str, Learned]] = {
        "weights_": Learned("float", (None,)),
        "best_valid_": Learned("value"),
    }

    def __init__(
        self,
        members: Sequence[Recommender] = (),
        weights: Sequence[float] | None = None,
        normalize: str = "zscore",
        grid_step: float = 0.1,
        tune_metric: str = "ndcg@10",
        refit: bool = False,
    ) -> None:
        self.members = members
        self.weights = weights
        self.normalize = normalize
        self.grid_step = grid_step
        self.tune_metric = tune_metric
        self.refit = refit

    def clone(self) -> Ensemble:
        """A new, unfitted ensemble of unfitted copies of the members."""
        return type(self)(**{**self.get_params(), "members": [m.clone() for m in self.members]})

    # ------------------------------------------------------------------ fitting
    def _check_members(self) -> np.ndarray | None:
        """Refuses members that are not models and weights that do not fit them; the given weights, normalised."""
        if not self.members:
            raise ConfigError("Ensemble needs at least one member model")
        for i, m in enumerate(self.members):
            if not isinstance(m, Recommender):
                raise ConfigError(f"Ensemble member {i} is a {type(m).__name__}, not a Recommender")
        parse_metric(self.tune_metric)
        if self.weights is None:
            return None
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (len(self.members),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(
                f"Ensemble weights must be {len(self.members)} non-negative numbers, not all 0, got {self.weights!r}"
            )
        return w / w.sum()

    def fit(
        self, X: Interactions | sp.spmatrix, valid: EvalSet | Split | Interactions | sp.spmatrix | None = None
    ) -> Ensemble:
        m = self._check_fit_input(X)
        given = self._check_members()
        es = as_eval_set(valid, m)
        for member in self.members:
            stale = member.is_fitted and member.n_items_ != m.shape[1]
            if self.refit or not member.is_fitted or stale:
                member.fit(X, valid=valid)
        self._set_shape(m)
        self.best_valid_: float | None = None
        if given is not None:
            self.weights_ = given
        elif es is not None:
            self.weights_, self.best_valid_ = self._tune(es)
        else:
            self.weights_ = np.full(len(self.members), 1.0 / len(self.members))
        return self

    def _tune(self, es: EvalSet) -> tuple[np.ndarray, float]:
        """The simplex-grid weights best on `es` by `tune_metric`, and that value (mean over `es.users`)."""
        name, k = parse_metric(self.tune_metric)
        grid = simplex_grid(len(self.members), float(self.grid_step))
        totals = np.zeros(len(grid))
        n_items = es.target.shape[1]
        size = users_per_chunk(n_items * (len(self.members) + 2), DEFAULT_MEMORY_BUDGET)
        for start in range(0, len(es.users), size):
            ub = es.users[start : start + size]
            Z = self._member_scores(es.history, ub, np.ones(len(self.members), dtype=bool))
            excluded = entry_positions(es.exclude[ub])
            target = es.target[ub]
            n_rel = np.diff(target.indptr)
            rows = np.repeat(np.arange(len(ub)), n_rel)
            relevant = np.zeros((len(ub), n_items), dtype=bool)
            relevant[rows, target.indices] = True
            for g, w in enumerate(grid):
                s = np.tensordot(w.astype(np.float32), Z, axes=1)
                s[excluded] = -np.inf
                items, values = top_k(s, min(k, n_items))
                hits = np.take_along_axis(relevant, items, axis=1) & np.isfinite(values)
                if hits.shape[1] < k:
                    hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
                totals[g] += ranking_metrics(hits, n_rel, k)[name].sum()
        best = int(np.argmax(totals))
        return grid[best], float(totals[best] / max(len(es.users), 1))

    # ------------------------------------------------------------------ scoring
    def _member_scores(self, history: sp.csr_matrix, users: np.ndarray, active: np.ndarray) -> np.ndarray:
        """(n_members, len(users), n_items) normalised scores; members not `active` are left at 0."""
        seen = history[users]
        Z = np.zeros((len(self.members), len(users), history.shape[1]), dtype=np.float32)
        for i, member in enumerate(self.members):
            if active[i]:
                Z[i] = normalize_scores(member.score(history, users), seen, self.normalize)
        return Z

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        w = np.asarray(self.weights_, dtype=np.float32)
        return np.tensordot(w, self._member_scores(history, users, w > 0), axes=1)

    # ------------------------------------------------------------------ persistence
    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["members"] = list(params["members"])
        if params["weights"] is not None:
            params["weights"] = [float(v) for v in params["weights"]]
        return params

    def save(self, path: str | Path) -> Path:
        """Writes each member to `members/<i>/`, then the ensemble's own params.json and weights."""
        self._check_fitted()
        folder = Path(path)
        for i, member in enumerate(self.members):
            member.save(folder / MEMBERS_DIR / str(i))
        params = {**self.get_params(), "members": [type(m).__name__ for m in self.members]}
        return write_model(folder, {"class": type(self).__name__, "params": params}, self._learned_state())

    @classmethod
    def _saved_params(cls, folder: Path, params: dict[str, Any]) -> dict[str, Any]:
        names = params.get("members")
        where = folder / PARAMS_FILE
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ModelFileError(f"{where}: 'members' must be a non-empty list of model class names, got {names!r}")
        members = []
        for i, name in enumerate(names):
            try:
                member_cls = model_class(name)
            except ConfigError as exc:
                raise ModelFileError(f"{where}: member {i}: {exc}") from None
            sub = folder / MEMBERS_DIR / str(i)
            if not (sub / PARAMS_FILE).is_file():
                raise ModelFileError(f"{where}: member {i} ({name}) has no model files in {sub}")
            members.append(member_cls.load(sub))
        return {**params, "members": members}

    def _check_state(self, state: dict[str, Any], folder: Path) -> None:
        super()._check_state(state, folder)
        n, weights = len(self.members), state["weights_"]
        if weights.shape != (n,) or not np.isfinite(weights).all() or (weights < 0).any():
            raise ModelFileError(
                f"{folder / ARRAYS_FILE}: array 'weights_' has shape {weights.shape}, expected ({n},) "
                "finite non-negative weights, one per member"
            )
        for i, member in enumerate(self.members):
            if member.n_items_ != state["n_items_"]:
                raise ModelFileError(
                    f"{folder / MEMBERS_DIR / str(i)}: member {i} ({type(member).__name__}) has {member.n_items_} "
                    f"items but the ensemble's {PARAMS_FILE} says n_items_ = {state['n_items_']}"
                )
