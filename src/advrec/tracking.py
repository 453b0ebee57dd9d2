"""Experiment tracking: a fit's parameters, per-epoch statistics and final metrics in TensorBoard or MLflow.

A tracker is a training plug-in that only watches (`TrainingPlugin`, `changes_training = False`): every torch
model logs, each epoch, what its `training_log_` row holds (losses, the validation metric on the epochs that
evaluate, seconds, a GAN's stability diagnostics) and each optimizer's learning rate, at step = epoch. The
parameters go in when the fit starts; `finish(metrics)` adds the final (test) metrics and closes the run. A model
without a training loop (EASE, iALS) logs its parameters and final metrics only. Under a process group only rank
0 writes.

    with TensorBoardTracker("tb/bpr") as tb, MLflowTracker("sqlite:///mlflow.db") as ml:
        model.fit(split.train, valid=split, plugins=[tb, ml])
        report = evaluate(model, split)
        tb.finish(report.summary); ml.finish(report.summary)

Both need the `track` extra (`pip install 'advrec[track]'`: tensorboard, mlflow-skinny); without it a tracker
is refused with a message naming the extra. A local MLflow store is a folder (MLflow's file store, in maintenance
in MLflow 3) or, better, an SQLite URI ("sqlite:///mlflow.db").
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from advrec import distributed
from advrec.errors import ConfigError
from advrec.models.torch_base import TorchRecommender, TrainingPlugin

EXTRA = "pip install 'advrec[track]'"


def numbers(row: Mapping[str, Any], skip: tuple[str, ...] = ("epoch",)) -> dict[str, float]:
    """The finite numbers of a log row or a metrics summary (strings, NaN and `skip` left out)."""
    out = {}
    for key, value in row.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


def model_params(model: Any) -> dict[str, str]:
    """The model's class and constructor parameters, as text (what a tracker's parameter table holds)."""
    params = {"model": type(model).__name__}
    for key, value in sorted(model.get_params().items()):
        params[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    return params


class Tracker(TrainingPlugin):
    """What both trackers share: the hooks of the training loop, `log_params`, `finish`, and use as a context."""

    changes_training = False

    def __init__(self) -> None:
        self.finished = False
        self.params_logged = False

    # ------------------------------------------------------------------ what a backend writes
    def _params(self, params: dict[str, str]) -> None:
        raise NotImplementedError

    def _metrics(self, metrics: dict[str, float], step: int | None) -> None:
        raise NotImplementedError

    def _close(self, failed: bool) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Where this tracker logs (a run manifest's "tracking" entry)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks and use
    def log_params(self, model: Any) -> None:
        """The model's parameters, once per tracker (a model without a training loop calls it directly)."""
        if not self.params_logged and distributed.is_main():
            self._params(model_params(model))
        self.params_logged = True

    def setup(self, model: TorchRecommender, X: Any) -> None:
        self.log_params(model)

    def epoch_end(self, model: TorchRecommender, row: dict[str, float]) -> None:
        if not distributed.is_main():
            return
        metrics = {f"train/{k}": v for k, v in numbers(row).items()}
        for name, optimizer in model.training.optimizers.items():
            metrics[f"lr/{name}"] = float(optimizer.param_groups[0]["lr"])
        self._metrics(metrics, int(row["epoch"]))

    def finish(self, metrics: Mapping[str, Any] | None = None, failed: bool = False) -> None:
        """The final metrics (e.g. `Report.summary`, logged as "test/<metric>"), then the run is closed (as
        failed with `failed`: an MLflow run's status says so)."""
        if self.finished:
            return
        self.finished = True
        if distributed.is_main():
            if metrics:
                self._metrics({f"test/{k}": v for k, v in numbers(metrics, ("n_users",)).items()}, None)
            self._close(failed)

    def __exit__(self, *exc: object) -> None:
        self.finish(failed=exc[0] is not None)

    def __enter__(self) -> Tracker:
        return self


class TensorBoardTracker(Tracker):
    """TensorBoard event files in `logdir` (`tensorboard --logdir DIR` shows them)."""

    def __init__(self, logdir: str | Path) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"TensorBoard logging needs the tensorboard package: {EXTRA}") from None
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir)) if distributed.is_main() else None

    def _params(self, params: dict[str, str]) -> None:
        assert self.writer is not None
        table = "| parameter | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("params", table, 0)

    def _metrics(self, metrics: dict[str, float], step: int | None) -> None:
        assert self.writer is not None
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, 0 if step is None else step)
        self.writer.flush()

    def _close(self, failed: bool) -> None:
        assert self.writer is not None
        self.writer.close()

    def describe(self) -> dict[str, Any]:
        return {"tensorboard": str(self.logdir)}


def mlflow_name(key: str) -> str:
    """A metric's name as MLflow allows it: "@" (not allowed) written "_at_" ("test/ndcg@10" → "test/ndcg_at_10")."""
    return key.replace("@", "_at_")


class MLflowTracker(Tracker):
    """An MLflow run in experiment `experiment` at `uri` ("sqlite:///mlflow.db", a folder or file: URI, or a
    tracking server's http URL); `run_id` names it once started."""

    def __init__(self, uri: str, experiment: str = "advrec", run_name: str | None = None) -> None:
        super().__init__()
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(f"MLflow logging needs the mlflow-skinny package: {EXTRA}") from None
        if "://" not in uri and not uri.startswith("file:"):
            uri = Path(uri).resolve().as_uri()  # a folder: MLflow's local file store
        if uri.startswith("file:"):  # in maintenance in MLflow 3, refused unless asked for: asked for here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri, self.run_id, self.experiment = uri, "", experiment
        if not distributed.is_main():
            return
        self.client = MlflowClient(uri)
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id

    def _params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])

    def _metrics(self, metrics: dict[str, float], step: int | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        named = {mlflow_name(k): v for k, v in metrics.items()}
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in named.items()])

    def _close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def describe(self) -> dict[str, Any]:
        """Where the run is, for the run's manifest: the URI without a password it may carry."""
        from urllib.parse import urlsplit, urlunsplit

        parts, uri = urlsplit(self.uri), self.uri
        if "@" in parts.netloc:  # user[:password]@host (rebuilt only then: urlunsplit drops sqlite:////'s slashes)
            uri = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
        return {"mlflow": {"uri": uri, "experiment": self.experiment, "run_id": self.run_id}}
