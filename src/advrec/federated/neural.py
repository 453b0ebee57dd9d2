"""Federated MultVAE: FedAvg (McMahan et al., AISTATS 2017) of a torch recommender's weights.

The server holds the network's weights; in a round a node starts a `MultVAE` from them, trains `local-epochs`
epochs on its own users' histories (the shared torch training loop: Adam, input dropout, the multinomial
likelihood) and answers the new weights with its user count as the weight; the strategy's weighted mean (or a
server optimiser on it) is the next round's network. MultVAE's encoder is amortised (it maps a history to a code
with weights shared by all users), so the whole network is aggregated and no per-user state stays behind: a
user's code is computed on their device from their history, for training, evaluation and serving alike.

Differences from the centralised fit: β is held at `beta` (the KL annealing of one fit would restart on every
node every round), and each node's Adam state starts afresh each round.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from advrec.models import MultVAE


def model_of(s: Mapping[str, Any], epochs: int, seed: int) -> MultVAE:
    """The MultVAE of the settings, on the CPU, training `epochs` epochs."""
    return MultVAE(hidden=s["hidden"], latent=s["latent"], dropout=s["dropout"], beta_cap=s["beta"],
                   anneal_steps=0, lr=s["local-lr"], batch_size=s["batch-size"], epochs=epochs, device="cpu",
                   random_state=seed)  # fmt: skip


def initial_weights(s: Mapping[str, Any], n_items: int) -> dict[str, np.ndarray]:
    """The network's initial weights, seeded by the run's seed (the same on every run)."""
    model = model_of(s, 1, s["seed"])
    with torch.random.fork_rng():
        torch.manual_seed(s["seed"])
        network = model._build(0, n_items)
    return {k: v.detach().numpy().copy() for k, v in network.state_dict().items()}


def node_seed(s: Mapping[str, Any], server_round: int, partition: int) -> int:
    """The seed of a node's local training in a round (its batches, dropout and sampling noise)."""
    return int(np.random.SeedSequence([s["seed"], server_round, partition]).generate_state(1)[0] >> 1)


def local_update(
    s: Mapping[str, Any], X: sp.csr_matrix, weights: Mapping[str, np.ndarray], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """`local-epochs` epochs of MultVAE on the rows `X` (this node's users) from `weights`: the new weights and
    the node's training statistics."""
    model = model_of(s, s["local-epochs"], seed)
    t0 = time.perf_counter()
    model.fit(X, init={k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    stats = {"loss": float(model.training_log_[-1]["loss"]), "client-seconds": time.perf_counter() - t0}
    state = model.network_.state_dict()
    return {k: state[k].detach().numpy().copy() for k in weights}, stats


def served_model(s: Mapping[str, Any], weights: Mapping[str, np.ndarray], train: sp.csr_matrix) -> MultVAE:
    """A fitted `MultVAE` holding the federation's released weights (a user's scores come from their history)."""
    model = model_of(s, 1, s["seed"])
    weights_state = {f"network.{k}": np.asarray(v) for k, v in weights.items()}
    model._restore_state({"n_users_": int(train.shape[0]), "n_items_": int(train.shape[1]), **weights_state})
    return model  # as a saved MultVAE is loaded: the network built, the weights in, in eval mode
