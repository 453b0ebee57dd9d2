"""`TorchRecommender`: the one training loop of the torch models, its plug-in protocol, saving torch weights."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch

from advrec import distributed
from advrec.data.interactions import Interactions
from advrec.data.splits import EvalSet, Split
from advrec.devices import deterministic, resolve_device
from advrec.distributed.factors import DATA_PARALLEL
from advrec.errors import AdvrecError, ConfigError, DataError, ModelFileError
from advrec.evaluation.evaluate import evaluate_scores
from advrec.evaluation.metrics import METRICS
from advrec.io import ARRAYS_FILE, PARAMS_FILE
from advrec.models.base import Recommender
from advrec.models.checkpoint import Checkpoint
from advrec.models.params import RANDOM_STATE, Interval, declare
from advrec.progress import Steps, progress_wanted

log = logging.getLogger(__name__)


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


Valid: TypeAlias = EvalSet | Split | Interactions | sp.spmatrix | None  # what `fit(valid=...)` takes


def as_eval_set(valid: Valid, train: sp.csr_matrix) -> EvalSet | None:
    """The validation task of `valid`: a Split's validation part, an EvalSet as it is, or held-out interactions
    (a users × items matrix, or `Interactions`, of the training shape) ranked from the training matrix `train`
    with its items excluded."""
    if valid is None or isinstance(valid, EvalSet):
        return valid
    if isinstance(valid, Split):
        return valid.eval_set("valid")
    if isinstance(valid, Interactions):
        valid = valid.matrix
    if not sp.issparse(valid):
        raise DataError(
            f"valid must be a Split, an EvalSet or a sparse users × items matrix of held-out interactions, not "
            f"{type(valid).__name__}"
        )
    target = sp.csr_matrix(valid, dtype=np.float32)
    if target.shape != train.shape:
        raise DataError(
            f"valid has shape {target.shape}; the held-out interactions need the training shape {train.shape}"
        )
    exclude = train.astype(np.float32, copy=True)
    exclude.data[:] = 1.0
    return EvalSet(train, target, exclude, np.flatnonzero(np.diff(target.indptr) > 0))


def parse_metric(text: str) -> tuple[str, int]:
    """ "ndcg@10" → ("ndcg", 10); a `ConfigError` naming the known metrics otherwise."""
    name, sep, k = str(text).partition("@")
    if not sep or name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"valid_metric must be METRIC@K with METRIC one of {list(METRICS)} and K ≥ 1, got {text!r}")
    return name, int(k)


class TrainingPlugin:
    """What another layer adds to training (DP-SGD, adversarial perturbations, adversary heads): an object whose
    hook points `TorchRecommender`'s loop calls. Every hook is optional; the base class changes nothing.

    In the order the loop calls them: `setup` (network built, before the optimizers), `make_optimizer` (may wrap
    or replace a phase's optimizer), `batches` (may replace a phase's batch stream), per batch `reduce` (per-example
    losses → the object whose `.backward()` trains the batch; None: the mean) and `loss` (terms added to the batch
    loss), `epoch_end` (each epoch's log row, once the epoch is trained and validated; it may raise to stop the fit),
    `teardown` (always, after the last epoch), then `record` (what the plug-in leaves on the model, as one typed
    record). With any plug-in that changes training, a model trains through autograd (BPRMF leaves its written-out
    step); a plug-in that only watches (`changes_training = False`: it uses no hook but `setup`, `epoch_end`,
    `teardown` and `record`) leaves the fit as it is without it.
    """

    changes_training: ClassVar[bool] = True

    def setup(self, model: TorchRecommender, X: sp.csr_matrix) -> None:
        """Called once the network is built (and warm-started), before the optimizers are made."""

    def make_optimizer(
        self, model: TorchRecommender, phase: Phase, default: Callable[[], torch.optim.Optimizer]
    ) -> torch.optim.Optimizer:
        return default()

    def batches(
        self, model: TorchRecommender, phase: Phase, batches: Iterable[Any], rng: np.random.Generator
    ) -> Iterable[Any]:
        return batches

    def reduce(self, model: TorchRecommender, per_example: torch.Tensor) -> Any:
        return None

    def loss(self, model: TorchRecommender, batch: Any, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def epoch_end(self, model: TorchRecommender, row: dict[str, float]) -> None:
        """Called after each epoch with its `training_log_` row (the validation metric on the epochs that evaluate,
        as "valid_<metric>@<k>"); an exception raised here ends the fit (a tuner prunes a trial so)."""

    def teardown(self, model: TorchRecommender) -> None:
        """Called after training, also when it failed."""

    def record(self, model: TorchRecommender) -> None:
        """Leaves the plug-in's record on the trained model."""


@dataclass
class Phase:
    """One pass of an epoch: `repeats` times over `batches(X, rng)`, each batch trained with `loss(batch)`.

    `loss` returns a scalar, a vector of per-example losses (reduced by a plug-in, or their mean), or (loss, batch
    statistics). `module`: the part of the network the phase's optimizer updates; `frozen`: a part whose gradients
    are off during the phase. `weighted`: the logged loss is the mean over examples (else over batches);
    `plugins`: whether plug-ins apply to this phase; `clip`: gradient clipping by norm (0: none).
    """

    name: str
    batches: Callable[[sp.csr_matrix, np.random.Generator], Iterable[Any]]
    loss: Callable[[Any], Any]
    module: torch.nn.Module
    repeats: int = 1
    frozen: torch.nn.Module | None = None
    weighted: bool = True
    plugins: bool = True
    clip: float = 0.0
    lr: float | None = None


@dataclass
class Training:
    """The state of one fit, dropped after it: plug-ins (those that change training; `watchers`: those that only
    watch it), optimizers by phase, epoch and step counters, and whether the network is data-parallel over a
    process group."""

    plugins: list[TrainingPlugin]
    X: sp.csr_matrix
    rng: np.random.Generator
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    epoch: int = 0
    step: int = 0
    distributed: bool = False
    seed: int = 0
    objectives: dict[str, torch.nn.Module] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # the model's per-fit look-up tables and buffers
    sent: list[int] = field(default_factory=lambda: [0])  # bytes this process sent in gradient all-reduces
    watchers: list[TrainingPlugin] = field(default_factory=list)


def _counted_allreduce(state, bucket):  # type: ignore[no-untyped-def]  # DDP refuses string annotations here
    """DDP's default all-reduce of a gradient bucket, with the bytes a ring all-reduce sends (2(w − 1)/w of the
    bucket) added to `state[0]`."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    w = distributed.world_size()
    buffer = bucket.buffer()
    state[0] += int(2 * (w - 1) * buffer.numel() * buffer.element_size() // w)
    return allreduce_hook(None, bucket)


class _Objective(torch.nn.Module):
    """A phase's loss as the forward of a module holding the phase's parameters, so DDP can wrap it: DDP averages
    the gradients of `module` over the process group whatever path the loss takes through the network."""

    def __init__(self, module: torch.nn.Module, loss: Callable[[Any], Any]) -> None:
        super().__init__()
        self.trained = module
        self._loss = loss

    def forward(self, batch: Any) -> Any:
        return self._loss(batch)


def batch_size_of(batch: Any) -> int:
    """The number of examples in a batch: a sequence's length, or that of the first tensor of a dict."""
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    return len(batch)


class TorchRecommender(Recommender):
    """The one training loop of the torch models: device, seeding, optimizers, batching, epochs, early stopping,
    checkpoints, progress, logging, plug-ins and data parallelism over `torch.distributed`.

    A model supplies its network (`_build(n_users, n_items)`), `batches(X, rng)` (the batches of one epoch) and
    `batch_loss(batch)`, and `_score`. A model with several passes per epoch (the GANs' alternating D/G schedule)
    declares them in `phases()`; a model that writes its gradient out overrides `_train_step`. With a validation
    set the loop evaluates `valid_metric` (e.g. "ndcg@10", "recall@20") every `eval_every` epochs, keeps the best
    weights and stops after `patience` evaluations without improvement. Other layers add training options as
    `TrainingPlugin`s passed to `fit`.

    Under torchrun (a process group of several processes) the network is wrapped in DDP, each rank trains on its
    share of the examples (a seeded permutation per epoch, dealt out round-robin) with batches of
    ⌈batch_size / world size⌉, so a step still sees `batch_size` examples in all; validation is sharded by user.
    """

    # intra-op threads of training on the CPU (None: the process's setting). A model whose batches are small
    # sets 1: a kernel on a few thousand rows gains little from a second thread, and on a busy machine the
    # threads of every kernel wait for each other (a fit that took 68 s alone took 3,311 s beside other jobs).
    cpu_train_threads: ClassVar[int | None] = None
    # whether a checkpoint holds all a fit's state (a model keeping more per-fit state sets False)
    resumable: ClassVar[bool] = True
    scale_out: ClassVar[str] = DATA_PARALLEL
    _parameter_constraints = declare(
        epochs=[Interval(int, 1, None, closed="left")],
        batch_size=[Interval(int, 1, None, closed="left")],
        lr=[Interval(float, 0, None, closed="neither")],
        patience=[Interval(int, 1, None, closed="left")],
        eval_every=[Interval(int, 1, None, closed="left")],
        device=[str],
        random_state=RANDOM_STATE,
        verbose=[bool],
        valid_metric=[str],
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
        valid_metric: str = "ndcg@10",
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.eval_every = eval_every
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.valid_metric = valid_metric

    # ------------------------------------------------------------------ what a model supplies
    def _build(self, n_users: int, n_items: int) -> torch.nn.Module:
        raise NotImplementedError

    def batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterable[Any]:
        """The batches of one epoch (under a process group: of this rank's share, see `examples`)."""
        raise NotImplementedError

    def batch_loss(self, batch: Any) -> Any:
        """A batch's loss: a scalar, or one loss per example (a plug-in such as DP-SGD reduces them)."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """The passes of one epoch (default: one pass over `batches` with `batch_loss`, the whole network)."""
        return [Phase("train", self.batches, self.batch_loss, self.network_)]

    def _make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        return torch.optim.Adam(phase.module.parameters(), lr=phase.lr or self.lr)

    def _prepare(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        """Per-fit preparation after the optimizers are made (look-up tables, masks); default: nothing."""

    def _before_epoch(self, X: sp.csr_matrix, rng: np.random.Generator) -> None:
        """Called before each epoch's passes (e.g. redrawing negative samples)."""

    def _after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Called after each epoch's training and validation, with its log row (diagnostics, schedules)."""

    # ------------------------------------------------------------------ helpers for models
    @property
    def training(self) -> Training:
        """The state of the fit in progress."""
        t = getattr(self, "_training", None)
        if t is None:
            raise AdvrecError(f"{type(self).__name__} is not being trained")
        return t

    def examples(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """This epoch's order of `items` (example indices): a permutation by `rng` in one process; under a process
        group, this rank's share of a permutation drawn from (seed, epoch), the same on every rank."""
        t = self.training
        if not t.distributed:
            return rng.permutation(items)
        return distributed.shard(np.asarray(items), t.seed, t.epoch)

    def user_batches(self, X: sp.csr_matrix, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Every user with interactions once, in this epoch's order (`examples`), in batches of `local_batch_size`
        user indices: the batches of the models whose examples are users."""
        order = self.examples(np.flatnonzero(np.diff(X.indptr) > 0), rng)
        size = self.local_batch_size
        return (order[start : start + size] for start in range(0, len(order), size))

    @property
    def local_batch_size(self) -> int:
        """The examples of one batch in this process (the batch is split over the ranks of a process group)."""
        return -(-self.batch_size // distributed.world_size()) if self.training.distributed else self.batch_size

    # ------------------------------------------------------------------ training loop
    def fit(
        self,
        X: Interactions | sp.spmatrix,
        valid: Valid = None,
        init: TorchRecommender | Mapping[str, torch.Tensor] | None = None,
        plugins: Sequence[TrainingPlugin] = (),
        checkpoint: str | Path | None = None,
    ) -> TorchRecommender:
        """Trains on `X`; with `valid`, early stopping on the validation metric and the best epoch kept.

        `init`: a fitted model of the same class and shape whose weights training starts from (fine-tuning,
        e.g. adversarial training after pretraining), or its network's state dict (a federated round starts each
        node from the server's weights); the optimizer starts afresh. `plugins`: training options of
        other layers (`TrainingPlugin`). `checkpoint`: a folder where the state is saved after every epoch; a fit
        that finds a checkpoint of the same setting there resumes from it (e.g. after a worker was restarted).
        """
        m = self._check_fit_input(X)
        metric, k = parse_metric(self.valid_metric)
        es = as_eval_set(valid, m)
        self._set_shape(m)
        self.device_ = distributed.local_device(resolve_device(self.device))
        on_group = distributed.init(self.device_.type)
        seed = int(distributed.broadcast_object(seed_of(self.random_state)))  # type: ignore[call-overload]
        rng = np.random.default_rng(distributed.rank_seed(seed) if on_group else seed)
        forked = torch.random.fork_rng(devices=[self.device_] if self.device_.type == "cuda" else [])
        threads = intra_op_threads(self.cpu_train_threads if self.device_.type == "cpu" else None)
        with forked, deterministic(), threads:
            torch.manual_seed(seed)
            self.network_ = self._build(self.n_users_, self.n_items_).to(self.device_)
            if init is not None:
                self._warm_start(init)
            changing = [p for p in plugins if p.changes_training]
            watchers = [p for p in plugins if not p.changes_training]
            self._training = Training(changing, m, rng, distributed=on_group, seed=seed, watchers=watchers)
            try:
                for plugin in plugins:
                    plugin.setup(self, m)
                self._start(m, rng)
                if on_group:
                    torch.manual_seed(distributed.rank_seed(seed))  # dropout and noise differ between ranks
                self._fit_loop(m, es, rng, (metric, k), Checkpoint.at(checkpoint, self, m))
            finally:
                for plugin in plugins:
                    plugin.teardown(self)
                self._training.objectives.clear()  # the DDP wrappers go with the fit, before any process group
                del self._training
        for plugin in plugins:
            plugin.record(self)
        return self

    def _start(self, m: sp.csr_matrix, rng: np.random.Generator) -> None:
        """The optimizers of every phase (through the plug-ins), the model's preparation, DDP wrappers."""
        t = self.training
        for phase in self.phases():

            def default(phase: Phase = phase) -> torch.optim.Optimizer:
                return self._make_optimizer(phase)

            opt = None
            for plugin in t.plugins if phase.plugins else []:
                opt = plugin.make_optimizer(self, phase, default) if opt is None else opt
            t.optimizers[phase.name] = opt if opt is not None else default()
        self._prepare(m, rng)
        if t.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device_.index] if self.device_.type == "cuda" else None
            for phase in self.phases():
                # DP-SGD (Opacus) reduces its clipped, noised gradients itself: no second averaging by DDP
                if any(type(p).reduce is not TrainingPlugin.reduce for p in t.plugins):
                    continue
                ddp = DDP(_Objective(phase.module, phase.loss), device_ids=ids)
                ddp.register_comm_hook(t.sent, _counted_allreduce)
                t.objectives[phase.name] = ddp

    def _warm_start(self, init: TorchRecommender | Mapping[str, torch.Tensor]) -> None:
        if isinstance(init, Mapping):
            try:
                self.network_.load_state_dict(init)
            except RuntimeError as err:  # missing, unexpected or mis-shaped weights
                raise DataError(f"init does not fit {type(self).__name__}'s network: {err}") from None
            return
        if type(init) is not type(self) or not init.is_fitted:
            raise ConfigError(f"init must be a fitted {type(self).__name__}, got {type(init).__name__}")
        if (init.n_users_, init.n_items_) != (self.n_users_, self.n_items_):
            raise DataError(
                f"init was fitted on {init.n_users_}×{init.n_items_} but the data is {self.n_users_}×{self.n_items_}"
            )
        self.network_.load_state_dict(init.network_.state_dict())

    def _fit_loop(
        self, m: sp.csr_matrix, es: EvalSet | None, rng: np.random.Generator, metric: tuple[str, int],
        checkpoint: Checkpoint | None,
    ) -> None:  # fmt: skip
        t = self.training
        self.training_log_: list[dict[str, float]] = []
        best: dict[str, Any] = {"value": -np.inf, "state": None, "bad": 0}
        first = 1
        if checkpoint is not None:
            first = checkpoint.resume(self, rng, best)
        key = f"valid_{metric[0]}@{metric[1]}"
        show = progress_wanted(self.verbose or None) and distributed.is_main()
        bar = Steps(range(first, self.epochs + 1), type(self).__name__, show, "epoch", may_stop_early=es is not None)
        for epoch in bar:
            if es is not None and best["bad"] >= self.patience:
                break
            t.epoch, sent = epoch, t.sent[0]
            t0 = time.perf_counter()
            self.network_.train()
            stats = self._train_epoch(m, rng)
            row = {"epoch": epoch, **stats, "seconds": time.perf_counter() - t0}
            if t.distributed:
                row["comm_bytes"] = t.sent[0] - sent
            bad_stats = [k for k, v in stats.items() if not np.isfinite(v)]
            if bad_stats:
                raise FloatingPointError(
                    f"{type(self).__name__}: {bad_stats[0]} became {stats[bad_stats[0]]} at epoch {epoch}"
                )
            if es is not None and (epoch % self.eval_every == 0 or epoch == self.epochs):
                row[key] = value = self._validate(es, metric)
                if value > best["value"]:
                    best.update(value=value, bad=0, state=copy.deepcopy(self.network_.state_dict()))
                    self.best_epoch_ = epoch
                else:
                    best["bad"] += 1
            self._after_epoch(epoch, row)
            self.training_log_.append(row)
            bar.report(row)
            log.debug("%s epoch %d: %s", type(self).__name__, epoch, row)
            if checkpoint is not None:
                checkpoint.save(self, rng, best, epoch)
            for plugin in (*t.plugins, *t.watchers):
                plugin.epoch_end(self, row)
        if best["state"] is not None:
            self.network_.load_state_dict(best["state"])
            self.best_valid_ = float(best["value"])
        self.epochs_run_ = len(self.training_log_)
        self.epoch_seconds_ = float(np.mean([r["seconds"] for r in self.training_log_])) if self.training_log_ else 0.0
        self.network_.eval()

    def _train_epoch(self, X: sp.csr_matrix, rng: np.random.Generator) -> dict[str, float]:
        """One epoch: every phase's passes; returns the epoch's statistics ("loss" is the last phase's loss)."""
        t = self.training
        out: dict[str, float] = {}
        self._before_epoch(X, rng)
        for phase in self.phases():
            sums: dict[str, list[float]] = defaultdict(list)
            total, seen = torch.zeros((), dtype=torch.float64, device=self.device_), 0
            if phase.frozen is not None:
                phase.frozen.requires_grad_(False)  # passes of the other part need no gradients of this one
            try:
                for _ in range(phase.repeats):
                    batches = phase.batches(X, rng)
                    for plugin in t.plugins if phase.plugins else []:
                        batches = plugin.batches(self, phase, batches, rng)
                    for batch in batches:
                        loss, stats = self._train_step(phase, batch)
                        n = batch_size_of(batch)
                        if phase.weighted:
                            total, seen = total + loss * n, seen + n
                        else:
                            sums[phase.name].append(float(loss))
                        for k, v in stats.items():
                            sums[k].append(v)
                        t.step += 1
            finally:
                if phase.frozen is not None:
                    phase.frozen.requires_grad_(True)
            means = {k: float(np.mean(values)) for k, values in sums.items()}
            weighted = np.array([float(total), seen], dtype=np.float64)
            if t.distributed:  # the epoch's statistics over all ranks: sums of sums, means of means
                weighted = distributed.all_sum(weighted)
                keys = sorted(means)
                summed = distributed.all_sum([means[k] for k in keys]) / distributed.world_size()
                means = {k: float(v) for k, v in zip(keys, summed, strict=True)}
            out.update(means)
            out["loss"] = float(weighted[0] / max(weighted[1], 1)) if phase.weighted else out.get(phase.name, 0.0)
            if phase.name != "train":  # a weighted phase's loss is its mean over examples, "loss"
                out[f"{phase.name}_loss"] = out["loss"] if phase.weighted else out.pop(phase.name, float("nan"))
            else:
                out.pop("train", None)
        return out

    def _train_step(self, phase: Phase, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """One update: the phase's loss (through DDP under a process group), the plug-ins' reduction and terms,
        backward, clipping, the optimizer's step. Returns the batch loss (detached) and its statistics."""
        t = self.training
        objective = t.objectives.get(phase.name)
        out = objective(batch) if objective is not None else phase.loss(batch)
        loss, stats = out if isinstance(out, tuple) else (out, {})
        plugins = t.plugins if phase.plugins else []
        if loss.ndim == 1:
            reduced = next((r for r in (p.reduce(self, loss) for p in plugins) if r is not None), None)
            loss = loss.mean() if reduced is None else reduced
        for plugin in plugins:
            loss = plugin.loss(self, batch, loss)
        optimizer = t.optimizers[phase.name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if phase.clip > 0:
            torch.nn.utils.clip_grad_norm_(phase.module.parameters(), phase.clip)
        optimizer.step()
        return loss.detach(), stats

    def _scoring_history(self, es: EvalSet) -> sp.csr_matrix:
        """The history matrix `_score` reads for a validation set (a sequential model's holds the order)."""
        return es.history

    def _validate(self, es: EvalSet, metric: tuple[str, int] = ("ndcg", 10)) -> float:
        self.network_.eval()
        name, k = metric
        history = self._scoring_history(es)
        with torch.no_grad():
            report = evaluate_scores(lambda h, u: self._score(history, u), es, ks=(k,), metrics=(name,), progress=False)
        self.network_.train()
        return report.summary[f"{name}@{k}"]

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
