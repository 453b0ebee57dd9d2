"""A federated training run as a normal advrec run directory (`advrec federate`), servable by `advrec serve`.

The federation (Flower's simulation engine, `simulate`) leaves the arrays of the released round. Federated iALS:
the run directory holds the item factors in an `IALS` whose user vectors are each user's exact iALS step against
them (what every client computes on its device, `advrec.federated.fcf.user_factors`). Federated MultVAE: the
network's weights in a `MultVAE`, which scores a user from their history. Either way `advrec serve`, `evaluate` and
`recommend` treat it as any run of that model, and a history sent to the service is folded in the same way.
The manifest's "federated" entry records the federation: clients, rounds, strategy, ε and δ, defence, bytes
communicated, the chosen round and the history of rounds. The run directory holds the split, like every run: it is
the operator's copy of a simulation, where all the data is on one machine anyway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.splits import Split
from advrec.errors import ConfigError
from advrec.federated import neural
from advrec.federated.app import (
    RELEASED,
    federation_data,
    federation_interactions,
    forget_cache,
    settings_of,
    simulate,
)
from advrec.models import IALS, MultVAE

# the names `advrec federate` takes (any case) and the federated model each trains
FEDERATED_MODELS = {"FCF": "fcf", "IALS": "fcf", "MULTVAE": "multvae"}


def served_model(item_factors: np.ndarray, s: Mapping[str, Any], train: sp.csr_matrix) -> IALS:
    """An `IALS` over the federation's item factors, each training user's vector solved against them."""
    model = IALS(factors=item_factors.shape[1], reg=s["reg"], alpha=s["alpha"], solver="cholesky",
                 random_state=s["seed"], device="cpu")  # fmt: skip
    model._set_shape(train)
    model.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
    model.mean_frequency_ = 1.0  # no frequency scaling: every user's λ is `reg`, as on the clients
    model.user_factors_ = model.fold_in(train)
    return model


def communication(s: Mapping[str, Any], partitions: int, down: int, history: Mapping[str, Any]) -> dict:
    """Bytes of the arrays each client receives (`down`: the item factors or a MultVAE's weights, float32) and
    sends (the same; under SecAgg+ the masked quantised array, int64) per training round, and all the run's
    messages' array payloads: every client down and up each round, down again for each evaluation (SecAgg+'s key
    messages, a few hundred bytes a neighbour, and Flower's framing not counted)."""
    up = 2 * down if s["secagg"] else down
    rounds = s["rounds"]
    evaluations = len(history["evaluate"])
    return {"bytes_per_client_round": down + up,
            "bytes_total": partitions * ((down + up) * rounds + down * evaluations)}  # fmt: skip


def federation(s: Mapping[str, Any], partitions: int) -> tuple[IALS | MultVAE, dict[str, Any], float]:
    """Runs the federation of the settings `s` on `partitions` simulated clients: the served model over the
    released arrays, the manifest's "federated" entry, and the wall seconds."""
    from safetensors.numpy import load_file

    if partitions < 1:
        raise ConfigError(f"clients must be at least 1, got {partitions}")
    if s["attack"]:
        raise ConfigError("an attack is an experiment (benchmarks/federated_poisoning.py), not a run to serve")
    split, _ = federation_data(s)
    with TemporaryDirectory(prefix="advrec-federate-") as tmp:
        t0 = time.perf_counter()
        simulate({**s, "out": tmp}, partitions=partitions)
        wall = time.perf_counter() - t0
        arrays = load_file(str(Path(tmp) / f"{RELEASED[s['model']]}.safetensors"))
        history = json.loads((Path(tmp) / "history.json").read_text())
    if s["model"] == "multvae":
        model: IALS | MultVAE = neural.served_model(s, arrays, split.train.matrix)
    else:
        model = served_model(arrays["item_factors"], s, split.train.matrix)
    down = sum(a.nbytes for a in arrays.values())
    federated = {
        "clients": partitions, "rounds": s["rounds"], "strategy": s["strategy"], "defence": s["defence"] or None,
        "secure_aggregation": s["secagg"], "epsilon": history["epsilon"],
        "delta": s["delta"] if history["epsilon"] else None, "noise_multiplier": history["noise_multiplier"],
        "best_round": history["best_round"], "seconds": history["seconds"],
        "model": s["model"], **communication(s, partitions, down, history),
        "history": {"train": history["train"], "evaluate": history["evaluate"]},
    }  # fmt: skip
    return model, federated, wall


def federate(config: Mapping[str, Any], partitions: int, out: Path) -> tuple[Path, dict[str, float]]:
    """Runs the federation of `config` (settings of `advrec.federated.app.DEFAULTS`) on `partitions` simulated
    clients and writes the run directory `out`; returns it and the test metrics of the released factors."""
    from advrec.evaluation import evaluate
    from advrec.runs import save_run

    s = settings_of(config)
    model, federated, wall = federation(s, partitions)
    split, _ = federation_data(s)
    t1 = time.perf_counter()
    report = evaluate(model, split, ks=(10, 20))
    X = federation_interactions(s)
    dataset = {"name": s["dataset"], "min_rating": s["min-rating"], "shape": list(X.shape), "nnz": X.nnz}
    path = save_run(out, model, X, split, dataset, metrics=report.summary,
                    timings={"fit": wall, "evaluate": time.perf_counter() - t1},
                    extra={"config": s, "federated": federated})  # fmt: skip
    return path, report.summary


def refederate(manifest: Mapping[str, Any], split: Split) -> tuple[IALS | MultVAE, dict[str, Any]]:
    """The federation of a run directory's manifest run again, with its settings and seeds, on `split` (the run's
    split without a forgotten user): the new served model and "federated" entry."""
    s = settings_of(manifest["config"])
    with TemporaryDirectory(prefix="advrec-refederate-") as tmp:
        split.save(Path(tmp) / "split")
        model, federated, _ = federation({**s, "split-dir": str(Path(tmp) / "split")}, manifest["federated"]["clients"])
    forget_cache(str(Path(tmp) / "split"))
    return model, federated
