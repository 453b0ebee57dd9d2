"""`TorchRecommender`: device choice, seeding, the epoch loop with early stopping, saving torch weights."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.interactions import Interactions
from advrec.data.splits import EvalSet, Split
from advrec.devices import deterministic, resolve_device
from advrec.errors import AdvrecError, ConfigError, DataError, ModelFileError
from advrec.evaluation.evaluate import evaluate_scores
from advrec.io import ARRAYS_FILE, PARAMS_FILE
from advrec.models.base import Recommender
from advrec.models.params import RANDOM_STATE, Interval, declare
from advrec.progress import Steps, progress_wanted

log = logging.getLogger(__name__)

BatchHook = Callable[["TorchRecommender", dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def seed_of(random_state: int | np.random.Generator | None) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    return int(random_state)


def csr_to_torch(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """Rows of a CSR matrix as a dense float32 tensor on `device`."""
    return torch.from_numpy(np.asarray(m.toarray(), dtype=np.float32)).to(device)


def csr_to_sparse_torch(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """Rows of a CSR matrix as a sparse CSR float32 tensor on `device` (nothing densified)."""
    m = sp.csr_matrix(m)
    if not m.has_sorted_indices:
        m = m.sorted_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(m.data, dtype=np.float32)),
            size=m.shape,
            check_invariants=False,  # scipy's CSR, indices sorted: valid by construction
        ).to(device)


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` inside the block (left as it is when None), restored after it."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def as_eval_set(valid: EvalSet | Split | None) -> EvalSet | None:
    if valid is None or isinstance(valid, EvalSet):
        return valid
    if isinstance(valid, Split):
        return valid.eval_set("valid")
    raise DataError(f"valid must be a Split or an EvalSet, not {type(valid).__name__}")


class TorchRecommender(Recommender):
    """Shared training machinery of the torch models.

    Subclasses build the network in `_build(n_users, n_items)` and implement
    `_train_epoch(X, rng) -> mean loss` (or a dict of named epoch statistics with a "loss") and `_score`;
    `_after_epoch(epoch, row)` may add entries to the epoch's log row; `self._train` holds per-fit scratch
    state (optimizer, samplers). With a validation set the loop evaluates NDCG@10 every `eval_every` epochs,
    keeps the best weights and stops after `patience` evaluations without improvement. Layers above `models`
    add training options through `batch_hooks`: functions (model, batch, loss) -> loss applied to each batch loss.
    """

    _parameter_constraints = declare(
        epochs=[Interval(int, 1, None, closed="left")],
        batch_size=[Interval(int, 1, None, closed="left")],
        lr=[Interval(float, 0, None, closed="neither")],
        patience=[Interval(int, 1, None, closed="left")],
        eval_every=[Interval(int, 1, None, closed="left")],
        device=[str],
        random_state=RANDOM_STATE,
        verbose=[bool],
    )

    def __init__(
        self,
        epochs: int = 100,
        batch_size: int = 512,
        lr: float = 1e-3,
        patience: int = 10,
        eval_every: int = 1,
        device: str = "auto",
        random_state: int | None = 2020,
        verbose: bool = False,
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.eval_every = eval_every
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    batch_hooks: list[BatchHook]
    # intra-op threads of training on the CPU (None: the process's setting). A model whose batches are small
    # sets 1: a kernel on a few thousand rows gains little from a second thread, and on a busy machine the
    # threads of every kernel wait for each other (a fit that took 68 s alone took 3,311 s beside other jobs).
    cpu_train_threads: ClassVar[int | None] = None

    # ------------------------------------------------------------------ to implement
    def _build(self, n_users: int, n_items: int) -> torch.nn.Module:
        raise NotImplementedError

    def _train_epoch(self, X: sp.csr_matrix, rng: np.random.Generator) -> float | dict[str, float]:
        raise NotImplementedError

    def _after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Called after each epoch's training and validation, with its log row (diagnostics, schedules)."""

    # ------------------------------------------------------------------ training loop
    def _apply_hooks(self, batch: dict[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        for hook in getattr(self, "batch_hooks", []):
            loss = hook(self, batch, loss)
        return loss

    def fit(
        self, X: Interactions | sp.spmatrix, valid: EvalSet | Split | None = None, init: TorchRecommender | None = None
    ) -> TorchRecommender:
        """Trains on `X`; with `valid`, early stopping on validation NDCG@10 and the best epoch kept.

        `init`: a fitted model of the same class and shape whose weights training starts from (fine-tuning,
        e.g. adversarial training after pretraining); the optimizer starts afresh.
        """
        m = self._check_fit_input(X)
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}")
        es = as_eval_set(valid)
        self._set_shape(m)
        self.device_ = resolve_device(self.device)
        seed = seed_of(self.random_state)
        rng = np.random.default_rng(seed)
        forked = torch.random.fork_rng(devices=[self.device_] if self.device_.type == "cuda" else [])
        threads = intra_op_threads(self.cpu_train_threads if self.device_.type == "cpu" else None)
        with forked, deterministic(), threads:
            torch.manual_seed(seed)
            self.network_ = self._build(self.n_users_, self.n_items_).to(self.device_)
            if init is not None:
                self._warm_start(init)
            self._train: dict[str, Any] = {}  # per-fit scratch (optimizer, samplers), dropped after fit
            try:
                self._fit_loop(m, es, rng)
            finally:
                del self._train
        return self

    def _warm_start(self, init: TorchRecommender) -> None:
        if type(init) is not type(self) or not init.is_fitted:
            raise ConfigError(f"init must be a fitted {type(self).__name__}, got {type(init).__name__}")
        if (init.n_users_, init.n_items_) != (self.n_users_, self.n_items_):
            raise DataError(
                f"init was fitted on {init.n_users_}×{init.n_items_} but the data is {self.n_users_}×{self.n_items_}"
            )
        self.network_.load_state_dict(init.network_.state_dict())

    def _fit_loop(self, m: sp.csr_matrix, es: EvalSet | None, rng: np.random.Generator) -> None:
        self.training_log_: list[dict[str, float]] = []
        best, best_state, bad = -np.inf, None, 0
        show = progress_wanted(self.verbose or None)
        bar = Steps(range(1, self.epochs + 1), type(self).__name__, show, "epoch", may_stop_early=es is not None)
        for epoch in bar:
            t0 = time.perf_counter()
            self.network_.train()
            out = self._train_epoch(m, rng)
            stats = {k: float(v) for k, v in out.items()} if isinstance(out, dict) else {"loss": float(out)}
            row = {"epoch": epoch, **stats, "seconds": time.perf_counter() - t0}
            bad_stats = [k for k, v in stats.items() if not np.isfinite(v)]
            if bad_stats:
                raise FloatingPointError(
                    f"{type(self).__name__}: {bad_stats[0]} became {stats[bad_stats[0]]} at epoch {epoch}"
                )
            if es is not None and (epoch % self.eval_every == 0 or epoch == self.epochs):
                ndcg = self._validate(es)
                row["valid_ndcg@10"] = ndcg
                if ndcg > best:
                    best, bad = ndcg, 0
                    best_state = copy.deepcopy(self.network_.state_dict())
                    self.best_epoch_ = epoch
                else:
                    bad += 1
            self._after_epoch(epoch, row)
            self.training_log_.append(row)
            bar.report(row)
            log.debug("%s epoch %d: %s", type(self).__name__, epoch, row)
            if es is not None and bad >= self.patience:
                break
        if best_state is not None:
            self.network_.load_state_dict(best_state)
            self.best_valid_ndcg_ = float(best)
        self.epochs_run_ = len(self.training_log_)
        self.epoch_seconds_ = float(np.mean([r["seconds"] for r in self.training_log_]))
        self.network_.eval()

    def _validate(self, es: EvalSet) -> float:
        self.network_.eval()
        with torch.no_grad():
            report = evaluate_scores(lambda h, u: self._score(h, u), es, ks=(10,), metrics=("ndcg",), progress=False)
        self.network_.train()
        return report.summary["ndcg@10"]

    # ------------------------------------------------------------------ persistence
    def _learned_state(self) -> dict[str, Any]:
        state = {k: v for k, v in super()._learned_state().items() if k not in ("network_", "device_")}
        for name, tensor in self.network_.state_dict().items():
            state[f"network.{name}"] = tensor.detach().cpu().numpy()
        return state

    def _check_state(self, state: dict[str, Any], folder: Path) -> None:
        """Also refuses network arrays that are missing, unexpected, or of another shape or dtype kind than
        those of the network `_build(n_users_, n_items_)` makes (built on the meta device: no memory used)."""
        super()._check_state(state, folder)
        where, cls = folder / ARRAYS_FILE, type(self).__name__
        Recommender._restore_state(self, {k: v for k, v in state.items() if not k.startswith("network.")})
        try:
            with torch.device("meta"):
                expected = self._build(self.n_users_, self.n_items_).state_dict()
        except AdvrecError as exc:
            raise ModelFileError(f"{folder}: a {cls} network cannot be built from the saved state: {exc}") from None
        for key, ref in expected.items():
            name, arr = f"network.{key}", state.get(f"network.{key}")
            if not isinstance(arr, np.ndarray):
                raise ModelFileError(f"{where}: array {name!r} is missing; a {cls} network needs {sorted(expected)}")
            if arr.shape != tuple(ref.shape):
                raise ModelFileError(
                    f"{where}: array {name!r} has shape {arr.shape}, expected {tuple(ref.shape)} with "
                    f"n_users_ = {self.n_users_}, n_items_ = {self.n_items_} (from {PARAMS_FILE})"
                )
            if arr.dtype.kind not in ("f" if ref.dtype.is_floating_point else "iub"):
                raise ModelFileError(f"{where}: array {name!r} has dtype {arr.dtype}, expected {ref.dtype}")
        extra = sorted(k for k in state if k.startswith("network.") and k[len("network.") :] not in expected)
        if extra:
            raise ModelFileError(f"{where}: array {extra[0]!r} is not part of a {cls} network")

    def _restore_state(self, state: dict[str, Any]) -> None:
        weights = {
            k[len("network.") :]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("network.")
        }
        super()._restore_state({k: v for k, v in state.items() if not k.startswith("network.")})
        self.device_ = resolve_device(self.device)
        self.network_ = self._build(self.n_users_, self.n_items_)
        self.network_.load_state_dict(weights)
        self.network_.to(self.device_).eval()
