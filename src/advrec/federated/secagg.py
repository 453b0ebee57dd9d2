"""Secure aggregation of federated iALS with Flower's SecAgg+ (Bell et al., CCS 2020): the server learns only the
sum of the nodes' item-factor arrays, never one node's.

Flower runs SecAgg+ on its workflow API (`DefaultWorkflow` with `SecAggPlusWorkflow` on the server, the
`secaggplus_mod` around the client), which speaks to the legacy strategies (`flwr.server.strategy`); these apps
are that pair, with the same node-side work as the others (`advrec.federated.app.node_update`, `node_metrics`).

Each node masks its array with pairwise and private masks shared by Shamir's secret sharing (`secagg-shares`
neighbours, `secagg-threshold` of them to unmask a dropped node), after quantising it into
[−`secagg-range`, `secagg-range`] on 2^22 levels: a value outside is clipped (the "secagg-clipped" metric counts
them; item factors stay well inside 8). The protocol's weights multiply the arrays before quantisation, so every
node takes weight 1 and scales its users' update by partitions / users instead (the partitions are dealt round
robin, so the unweighted mean is the mean over all users). Robust aggregation cannot run on a sum: a defence is
refused with `secagg`; user-level DP adds its noise to the unmasked mean, on the server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAdam, FedAvg, FedYogi
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from advrec.federated import app as fed

QUANTIZATION = 1 << 22  # levels of a quantised value (Flower's default); the modulus is 2^32


class _Client(NumPyClient):
    def __init__(self, s: dict[str, Any], context: Context) -> None:
        self.s, self.context = s, context

    def fit(self, parameters: list[np.ndarray], config: Mapping[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        Q = parameters[0]
        sent, metrics = fed.node_update(self.s, self.context, Q, int(config["server-round"]))
        users = int(metrics.pop("num-examples"))  # type: ignore[arg-type]
        n_users = fed.sizes(self.s)[1]
        # Q + mean over this node's users, rescaled so that the unweighted mean over nodes is the mean over all users
        sent = (Q + (sent - Q) * users * fed.parts(self.context) / n_users).astype(Q.dtype)
        metrics["secagg-clipped"] = int((np.abs(sent) > self.s["secagg-range"]).sum())
        return [sent], 1, dict(metrics)

    def evaluate(self, parameters: list[np.ndarray], config: Mapping[str, Any]) -> tuple[float, int, dict]:
        return 0.0, 1, dict(fed.node_metrics(self.s, self.context, parameters[0]))


def make_client_app(bound: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp of a SecAgg+ run (`secaggplus_mod` masks what `fit` returns)."""

    def client_fn(context: Context) -> Any:
        return _Client(fed.settings_of({**(bound or {}), **context.run_config}), context).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


class _Noisy(FedAvg):
    """The legacy FedAvg's mean plus seeded Gaussian noise (below a server optimiser that inherits from it)."""

    noise_std: float = 0.0
    noise_rng: np.random.Generator | None = None

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

        params, metrics = super().aggregate_fit(server_round, results, failures)
        if params is None or self.noise_std <= 0 or self.noise_rng is None:
            return params, metrics
        arrays = [a + self.noise_rng.normal(0.0, self.noise_std, a.shape).astype(a.dtype)
                  for a in parameters_to_ndarrays(params)]  # fmt: skip
        return ndarrays_to_parameters(arrays), metrics


def legacy_strategy(s: Mapping[str, Any], Q0: np.ndarray, noise_std: float, snapshots: dict[int, np.ndarray]) -> Any:
    """The legacy strategy of `strategy` over the SecAgg+ sum: evaluates through the clients every
    `evaluate-every` rounds and after the last, keeping the factors of those rounds in `snapshots`."""
    every, last = s["evaluate-every"], s["rounds"]
    base = {"fedavg": None, "fedadam": FedAdam, "fedyogi": FedYogi}[s["strategy"]]

    def due(server_round: int) -> bool:
        return server_round > 0 and (server_round % every == 0 or server_round == last)

    def keep(server_round: int, arrays: list[np.ndarray], config: Any) -> None:
        if due(server_round):
            snapshots[server_round] = arrays[0]

    def summed(results: list[tuple[int, Mapping[str, Any]]]) -> dict[str, float]:
        total: dict[str, float] = {}
        for _, metrics in results:
            for key, value in metrics.items():
                total[key] = total.get(key, 0.0) + float(value)
        return {k: v / max(total.get(f"{k.split('-', 1)[0]}-users", 0.0), 1.0)
                for k, v in total.items() if not k.endswith("-users")}  # fmt: skip

    def node_means(results: list[tuple[int, Mapping[str, Any]]]) -> dict[str, float]:
        """The training statistics averaged over nodes ("secagg-clipped": summed)."""
        keys = {k for _, m in results for k in m}
        out = {k: float(np.mean([m[k] for _, m in results if k in m])) for k in keys}
        out["secagg-clipped"] = float(sum(m.get("secagg-clipped", 0) for _, m in results))
        return out

    class Strategy(*((_Noisy,) if base is None else (base, _Noisy))):  # type: ignore[misc]
        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return super().configure_evaluate(server_round, parameters, client_manager) if due(server_round) else []

    common = {"fraction_fit": s["fraction-train"], "fraction_evaluate": 1.0, "min_fit_clients": s["min-nodes"],
              "min_evaluate_clients": s["min-nodes"], "min_available_clients": s["min-nodes"], "evaluate_fn": keep,
              "on_fit_config_fn": lambda r: {"server-round": r}, "initial_parameters": ndarrays_to_parameters([Q0]),
              "evaluate_metrics_aggregation_fn": summed, "fit_metrics_aggregation_fn": node_means,
              "accept_failures": False}  # fmt: skip
    optimiser = {} if base is None else {"eta": s["server-lr"], "eta_l": s["lr"], "beta_1": 0.9, "beta_2": 0.99,
                                         "tau": 1e-8}  # fmt: skip
    strategy = Strategy(**common, **optimiser)
    strategy.noise_std, strategy.noise_rng = noise_std, np.random.default_rng([s["seed"], 7])
    return strategy


def run_server(grid: Grid, context: Context, s: dict[str, Any], Q0: np.ndarray, noise_std: float) -> dict[str, Any]:
    """Runs the rounds under SecAgg+; returns the snapshots of the evaluated rounds and the per-round metrics."""
    snapshots: dict[int, np.ndarray] = {}
    strategy = legacy_strategy(s, Q0, noise_std, snapshots)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=s["rounds"]), strategy=strategy)
    shares = max(3, min(s["secagg-shares"], s["min-nodes"]))  # the neighbours of a node, itself included
    fit = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=max(2, math.ceil(shares * 2 / 3)),
                             max_weight=1.0, clipping_range=s["secagg-range"], quantization_range=QUANTIZATION,
                             timeout=s["round-timeout"])  # fmt: skip
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    history = legacy.history
    evaluate: dict[int, dict[str, float]] = {}
    for key, values in history.metrics_distributed.items():
        for r, value in values:
            evaluate.setdefault(int(r), {})[key] = float(value)
    train: dict[int, dict[str, float]] = {}
    for key, values in history.metrics_distributed_fit.items():
        for r, value in values:
            train.setdefault(int(r), {})[key] = float(value)
    return {"snapshots": snapshots, "evaluate": evaluate, "train": train}


# the ClientApp a SecAgg+ deployment loads (`advrec.federated.secagg:client_app`), configured by the run config
client_app = make_client_app()
