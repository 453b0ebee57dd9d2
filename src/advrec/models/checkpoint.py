"""Checkpoints of a torch fit after every epoch, so a fit resumes where a killed worker left it.

One file, `checkpoint.safetensors`, written atomically by rank 0: network weights, optimizer states, the best
weights so far, and every rank's numpy and torch random states; everything that is not a tensor (epoch, log,
counters, the random generators' states, the setting the checkpoint belongs to) is JSON in the file's metadata.
Loading never unpickles. A fit resumed from the checkpoint of epoch e gives the model an uninterrupted fit gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from advrec import distributed
from advrec.errors import ConfigError, ModelFileError
from advrec.io import atomic_write, to_jsonable

if TYPE_CHECKING:
    from advrec.models.torch_base import TorchRecommender

FILE = "checkpoint.safetensors"


def _flatten_optimizer(prefix: str, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An optimizer's state_dict with its tensors moved into `tensors` (keys under `prefix`); the rest as JSON."""
    per_param: dict[str, dict[str, Any]] = {}
    for idx, values in state["state"].items():
        entry: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().cpu().contiguous()
                entry[key] = {"__tensor__": f"{prefix}.{idx}.{key}"}
            else:
                entry[key] = value
        per_param[str(idx)] = entry
    return {"state": per_param, "param_groups": to_jsonable(state["param_groups"])}


def _unflatten_optimizer(doc: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, values in doc["state"].items():
        state[int(idx)] = {
            k: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v for k, v in values.items()
        }
    return {"state": state, "param_groups": doc["param_groups"]}


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state().tolist()}


class Checkpoint:
    """The checkpoint file of one fit setting in `folder` (see the module docstring)."""

    def __init__(self, folder: Path, key: dict[str, Any]) -> None:
        self.path = folder / FILE
        self.key = key

    @classmethod
    def at(cls, folder: str | Path | None, model: TorchRecommender, X: sp.csr_matrix) -> Checkpoint | None:
        """The checkpoint of this fit (model class and parameters, data, number of processes) in `folder`."""
        if folder is None:
            return None
        if model.training.plugins:
            names = ", ".join(type(p).__name__ for p in model.training.plugins)
            raise ConfigError(f"checkpoints resume a plain fit; training with {names} cannot be checkpointed")
        if not model.resumable:
            raise ConfigError(f"{type(model).__name__} keeps per-fit state a checkpoint does not hold; fit it whole")
        key = {
            "class": type(model).__name__,
            "params": to_jsonable({k: v for k, v in model.get_params().items() if k != "verbose"}),
            "data": [int(X.shape[0]), int(X.shape[1]), int(X.nnz)],
            "world_size": distributed.world_size(),
        }
        return cls(Path(folder), key)

    def save(self, model: TorchRecommender, rng: np.random.Generator, best: dict[str, Any], epoch: int) -> None:
        """Writes the state after `epoch` (rank 0; the random states of all ranks are gathered first)."""
        states = distributed.gather_objects(_rng_state(rng))
        if not distributed.is_main():
            return
        t = model.training
        tensors: dict[str, torch.Tensor] = {
            f"network.{k}": v.detach().cpu().contiguous() for k, v in model.network_.state_dict().items()
        }
        if best["state"] is not None:
            tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best["state"].items()})
        optimizers = {n: _flatten_optimizer(f"opt.{n}", o.state_dict(), tensors) for n, o in t.optimizers.items()}
        doc = {
            "key": self.key,
            "epoch": epoch,
            "step": t.step,
            "log": model.training_log_,
            "best": {"value": best["value"], "bad": best["bad"], "epoch": getattr(model, "best_epoch_", None)},
            "optimizers": optimizers,
            "rng": states,
        }
        meta = {"advrec": json.dumps(to_jsonable(doc))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    def resume(self, model: TorchRecommender, rng: np.random.Generator, best: dict[str, Any]) -> int:
        """Restores the saved state when there is one (the epoch to start from; 1 without a checkpoint)."""
        if not self.path.exists():
            return 1
        try:
            with safe_open(str(self.path), framework="pt") as f:
                doc = json.loads((f.metadata() or {})["advrec"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise ModelFileError(f"{self.path}: not a readable advrec checkpoint ({exc})") from None
        if doc.get("key") != self.key:
            raise ConfigError(
                f"{self.path} belongs to another fit ({doc.get('key')}); this fit is {self.key}: "
                "use another checkpoint folder or remove it"
            )
        t = model.training
        model.network_.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("network.")})
        for name, opt in t.optimizers.items():
            opt.load_state_dict(_unflatten_optimizer(doc["optimizers"][name], tensors))
        saved_best = {k[5:]: v.to(model.device_) for k, v in tensors.items() if k.startswith("best.")}
        best.update(value=doc["best"]["value"], bad=doc["best"]["bad"], state=saved_best or None)
        if doc["best"]["epoch"] is not None:
            model.best_epoch_ = int(doc["best"]["epoch"])
        t.step = int(doc["step"])
        model.training_log_ = list(doc["log"])
        mine = doc["rng"][distributed.rank()]
        rng.bit_generator.state = mine["numpy"]
        torch.set_rng_state(torch.tensor(mine["torch"], dtype=torch.uint8))
        return int(doc["epoch"]) + 1
