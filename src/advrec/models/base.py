"""`Recommender`: the base every model shares (parameters, input checks, score, recommend, save, load)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from advrec.data.interactions import Interactions, as_csr
from advrec.distributed.factors import SINGLE_NODE, refuse_single_node
from advrec.errors import AdvrecError, ConfigError, DataError, ModelFileError, NotFittedError, UnknownIdError
from advrec.evaluation.ranking import DEFAULT_MEMORY_BUDGET, entry_positions, top_k, users_per_chunk
from advrec.io import ARRAYS_FILE, PARAMS_FILE, model_dir, read_model, write_model
from advrec.models.params import validate_params
from advrec.models.records import PrivacyRecord, privacy_from_legacy

R = TypeVar("R", bound="Recommender")

_REGISTRY: dict[str, type[Recommender]] = {}

KINDS = {"float": "f", "int": "iu", "sparse": "", "value": ""}


@dataclass(frozen=True)
class Learned:
    """What one learned attribute must be when a model is loaded.

    `kind`: "float" or "int" (a dense array of that dtype kind), "sparse" (a sparse matrix), "value" (a JSON
    value). `axes`: the size of each axis, "users" / "items" for `n_users_` / `n_items_`, an int, or None
    for any size (arrays only). `optional`: the attribute may be absent, but is checked when present.
    """

    kind: str
    axes: tuple[str | int | None, ...] | None = None
    optional: bool = False

    def check(self, name: str, value: Any, sizes: dict[str, int], folder: Path) -> None:
        """Raises `ModelFileError` naming the file and `name` when `value` does not fit."""
        where = folder / (PARAMS_FILE if self.kind == "value" else ARRAYS_FILE)
        if self.kind == "value":
            return
        if self.kind == "sparse" and not sp.issparse(value):
            raise ModelFileError(f"{where}: array {name!r} must be a sparse matrix, found {type(value).__name__}")
        if self.kind != "sparse":
            if not isinstance(value, np.ndarray):
                raise ModelFileError(f"{where}: array {name!r} is missing (found a {type(value).__name__} instead)")
            if value.dtype.kind not in KINDS[self.kind]:
                raise ModelFileError(f"{where}: array {name!r} has dtype {value.dtype}, expected a {self.kind} dtype")
        if self.axes is None:
            return
        expected = tuple(sizes.get(a, a) if isinstance(a, str) else a for a in self.axes)
        shape = value.shape
        if len(shape) != len(expected) or any(e is not None and e != n for e, n in zip(expected, shape, strict=False)):
            want = "(" + ", ".join("any" if a is None else f"{a}" for a in self.axes) + ")"
            raise ModelFileError(
                f"{where}: array {name!r} has shape {shape}, expected {want} with n_users_ = {sizes['users']}, "
                f"n_items_ = {sizes['items']} (from {PARAMS_FILE})"
            )


class Recommender:
    """Base class: scikit-learn style estimator over a users×items matrix.

    Subclasses implement `fit(X)` (set learned attributes ending in `_`, then return self) and
    `_score(history, users)`. `uses_history` tells whether scores come from the history alone (such a
    model scores users it never saw) or from per-user vectors learned in `fit`.
    """

    uses_history: ClassVar[bool] = True
    # whether scores depend on the order of the history (then `score` takes Interactions with timestamps)
    _sequential: ClassVar[bool] = False
    # how fitting scales past one process (`advrec.distributed.factors`): closed-form models are single-node
    scale_out: ClassVar[str] = SINGLE_NODE
    # the differential-privacy guarantee of the training, set by a DP fit (`advrec.privacy.dp`), saved with the model
    privacy_: PrivacyRecord | None = None
    # what `load` requires of the learned state, besides n_users_ and n_items_ (each model declares its own)
    _required_state: ClassVar[dict[str, Learned]] = {}
    # what each constructor parameter may be (see `advrec.models.params`); checked by `_validate_params`
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    @property
    def sequential(self) -> bool:
        """Whether scores depend on the order of each history (then `score` takes Interactions with timestamps,
        and `evaluate` and serving hand them over)."""
        return self._sequential

    def __init_subclass__(cls, register: bool = True, **kw: Any) -> None:
        """Subclasses are known by name to `load` and `model_class`, unless declared with `register=False`."""
        super().__init_subclass__(**kw)
        if register:
            _REGISTRY[cls.__name__] = cls

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters and their current values."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: R, **params: Any) -> R:
        """Sets constructor parameters, refusing (before setting any) unknown names and disallowed values."""
        valid = self._param_names()
        for key in params:
            if key not in valid:
                raise ConfigError(f"{type(self).__name__} has no parameter {key!r}; parameters: {valid}")
        validate_params(type(self).__name__, self._parameter_constraints, {**self.get_params(), **params})
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def _validate_params(self) -> None:
        """Raises `ConfigError` naming a parameter whose value the class's `_parameter_constraints` refuse."""
        validate_params(type(self).__name__, self._parameter_constraints, self.get_params())

    def clone(self: R) -> R:
        """A new, unfitted model of the same class with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(self: R, X: Interactions | sp.spmatrix, valid: Any = None) -> R:
        raise NotImplementedError

    def _check_fit_input(self, X: Interactions | sp.spmatrix) -> sp.csr_matrix:
        """The training matrix as binary implicit feedback, checked (and the hyperparameters with it); a single-node
        model refuses a process group."""
        self._validate_params()
        if type(self).scale_out == SINGLE_NODE:
            refuse_single_node(type(self).__name__)
        m = as_csr(X, "training data")
        if m.shape[0] == 0 or m.shape[1] == 0 or m.nnz == 0:
            raise DataError(f"training data is empty (shape {m.shape}, {m.nnz} interactions)")
        if (m.data < 0).any():
            raise DataError("training data has negative values; pass interactions as non-negative weights")
        b = m.copy()
        b.eliminate_zeros()
        b.data[:] = 1.0
        return b

    def _set_shape(self, m: sp.csr_matrix) -> None:
        self.n_users_ = int(m.shape[0])
        self.n_items_ = int(m.shape[1])

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_items_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")

    # ------------------------------------------------------------------ scoring
    def _check_score_input(self, history: Any, users: Any) -> tuple[sp.csr_matrix, np.ndarray]:
        self._check_fitted()
        h = self._history_matrix(history)
        if h.shape[1] != self.n_items_:
            raise DataError(f"history has {h.shape[1]} items but the model was fitted on {self.n_items_} items")
        u = np.asarray(users)
        if u.ndim == 0:
            u = u.reshape(1)
        if u.size and u.dtype.kind not in "iu":
            raise DataError(f"users must be integer user indices, got dtype {u.dtype}")
        u = u.astype(np.int64)
        if u.size and (u.min() < 0 or u.max() >= h.shape[0]):
            bad = u[(u < 0) | (u >= h.shape[0])][0]
            raise UnknownIdError(f"user index {bad} is outside the history matrix ({h.shape[0]} users)")
        if not self.uses_history and u.size and u.max() >= self.n_users_:
            bad = u[u >= self.n_users_][0]
            raise UnknownIdError(
                f"user index {bad} was not seen in training ({self.n_users_} users); "
                f"{type(self).__name__} keeps one vector per user and cannot score new users"
            )
        return h, u

    def _history_matrix(self, history: Any) -> sp.csr_matrix:
        """The users×items matrix the model scores from (models that weight the history override this)."""
        return as_csr(history, "history")

    def score(self, history: Interactions | sp.spmatrix, users: Any) -> np.ndarray:
        """Scores of all items for `users` (indices into `history`): a (len(users), n_items) float32 array."""
        h, u = self._check_score_input(history, users)
        if u.size == 0:
            return np.zeros((0, self.n_items_), dtype=np.float32)
        return np.asarray(self._score(h, u), dtype=np.float32)

    def _score(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _binary_rows(history: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
        """The users' history rows as 0/1 implicit feedback (a copy)."""
        h = history[users]
        h.data[:] = 1.0
        return h

    def recommend(
        self,
        history: Interactions | sp.spmatrix,
        users: Any,
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores, (len(users), k) each; seen items are excluded unless told.

        Users are scored in chunks whose dense blocks fit `memory_budget` bytes (`batch_size` users per chunk
        when given). When fewer than k items are left for a user, the tail holds item -1 with score -inf.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1 users, got {batch_size}")
        h, u = self._check_score_input(history, users)
        k_eff = min(k, self.n_items_)
        size = batch_size or users_per_chunk(self.n_items_, memory_budget)
        items = np.full((len(u), k), -1, dtype=np.int64)
        scores = np.full((len(u), k), -np.inf, dtype=np.float32)
        for start in range(0, len(u), size):
            ub = u[start : start + size]
            s = np.array(self._score(h, ub), dtype=np.float32)
            if exclude_seen:
                s[entry_positions(h[ub])] = -np.inf
            ti, ts = top_k(s, k_eff)
            items[start : start + len(ub), :k_eff] = np.where(np.isfinite(ts), ti, -1)
            scores[start : start + len(ub), :k_eff] = ts
        return items, scores

    # ------------------------------------------------------------------ explanations
    def _contributions(self, items: np.ndarray, target: int) -> np.ndarray:
        """How much each history item in `items` adds to the score of `target` (models that can say)."""
        raise ConfigError(f"{type(self).__name__} cannot explain its scores by history items")

    def explain(self, history: Interactions | sp.spmatrix, user: int, item: int, n: int = 3) -> list[tuple[int, float]]:
        """The `n` history items of `user` that add most to the score of `item`: (item index, contribution)."""
        h, u = self._check_score_input(history, np.array([user]))
        if not 0 <= item < self.n_items_:
            raise UnknownIdError(f"item index {item} is outside the model's {self.n_items_} items")
        seen = h[int(u[0])].indices
        if not len(seen):
            return []
        contrib = np.asarray(self._contributions(seen, int(item)), dtype=np.float64)
        order = np.argsort(-contrib, kind="stable")[:n]
        return [(int(seen[j]), float(contrib[j])) for j in order]

    # ------------------------------------------------------------------ persistence
    def _learned_state(self) -> dict[str, Any]:
        """Learned attributes (names ending in `_`) to save; subclasses add what is not a plain attribute."""
        state = {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        if isinstance(state.get("privacy_"), PrivacyRecord):
            state["privacy_"] = state["privacy_"].as_dict()
        return state

    def _restore_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        legacy = privacy_from_legacy(state)
        if legacy is not None:
            state["privacy_"] = legacy
        elif isinstance(state.get("privacy_"), dict):
            state["privacy_"] = PrivacyRecord.from_dict(state["privacy_"], f"{PARAMS_FILE}: 'privacy_'")
        for k, v in state.items():
            setattr(self, k, v)

    def _check_state(self, state: dict[str, Any], folder: Path) -> None:
        """Refuses a learned state that lacks what `_required_state` declares or does not fit its shapes.

        Subclasses whose state has more structure (a torch network) extend this; `folder` holds the files.
        """
        sizes = {}
        for key in ("n_users_", "n_items_"):
            n = state.get(key)
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ModelFileError(f"{folder / PARAMS_FILE}: {key!r} is {n!r}, expected a non-negative int")
            sizes[key[2:-1]] = n
        for name, spec in self._required_state.items():
            if name not in state:
                if spec.optional:
                    continue
                file = PARAMS_FILE if spec.kind == "value" else ARRAYS_FILE
                raise ModelFileError(
                    f"{folder / file}: {'value' if spec.kind == 'value' else 'array'} {name!r} is missing; "
                    f"a {type(self).__name__} needs {sorted(self._required_state)}"
                )
            if state[name] is None and spec.optional:
                continue
            spec.check(name, state[name], sizes, folder)

    def save(self, path: str | Path) -> Path:
        """Writes `params.json` + `arrays.safetensors` to the folder `path`."""
        self._check_fitted()
        header = {"class": type(self).__name__, "params": self.get_params()}
        return write_model(path, header, self._learned_state())

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Loads a model saved by `save` (no unpickling); on the base class, the saved class is used."""
        folder = model_dir(path)
        header, state = read_model(folder)
        name = header.get("class")
        target = _REGISTRY.get(str(name))
        if target is None:
            raise ModelFileError(f"{path}: unknown model class {name!r}; known: {sorted(_REGISTRY)}")
        if cls is not Recommender and not issubclass(target, cls):
            raise ModelFileError(f"{path} holds a {name}, not a {cls.__name__}")
        params = target._saved_params(folder, dict(header.get("params", {})))
        defaults = {p.name: p.default for p in inspect.signature(target.__init__).parameters.values()}
        for key, value in params.items():  # JSON has no tuples: give tuple-typed parameters their type back
            if isinstance(value, list) and isinstance(defaults.get(key), tuple):
                params[key] = tuple(value)
        try:
            model = target(**params)
            model._validate_params()
        except (TypeError, AdvrecError) as exc:
            raise ModelFileError(f"{folder / PARAMS_FILE}: the parameters of {name} are refused: {exc}") from None
        model._check_state(state, folder)
        model._restore_state(state)
        return model  # type: ignore[return-value]

    @classmethod
    def _saved_params(cls, folder: Path, params: dict[str, Any]) -> dict[str, Any]:
        """The constructor parameters of a saved model from its params.json entries (a model whose parameters
        are themselves models, such as `Ensemble`, loads them here from `folder`)."""
        return params


def model_class(name: str) -> type[Recommender]:
    """A model class by name, case-insensitive (e.g. "ease", "MultVAE")."""
    import advrec.models  # noqa: F401  (registers the built-in models)

    concrete = {k: c for k, c in _REGISTRY.items() if c._score is not Recommender._score}
    for key, cls in concrete.items():
        if key.lower() == name.lower():
            return cls
    known = sorted(concrete)
    raise ConfigError(f"unknown model {name!r}; known models: {known}")
