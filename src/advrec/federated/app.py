"""Flower apps of federated iALS (`advrec.federated.fcf`): a ServerApp and a ClientApp, the same objects for
Flower's simulation engine and for a deployment of SuperLink and SuperNodes.

Every setting is a flat key of `DEFAULTS` (Flower's run config: `flwr run --run-config "rounds=20"`, or the
mapping given to `simulate`). A client is one partition of the users: node `partition-id` of `num-partitions`
(Flower's node config; the simulation engine numbers its virtual nodes) holds the users that a seeded permutation
deals to it, with their training rows and held-out rows of `ratio_split(min_rating-filtered dataset, split-seed)`.
Nothing else about a user leaves the client: it answers the item factors plus the mean of its users' updates, and
sums of ranking metrics computed on its own users.

The server holds only the item factors, aggregates with `strategy` (FedAvg's weighted mean, or FedAdam / FedYogi
on its difference, the pseudo-gradient, with `server-lr`) and evaluates through the clients after every round;
`out` names a folder where it writes the final factors (safetensors) and the history of rounds (JSON).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedYogi

from advrec.data.datasets import load_dataset
from advrec.data.interactions import Interactions
from advrec.data.splits import EvalSet, Split, ratio_split
from advrec.errors import ConfigError
from advrec.federated import neural
from advrec.federated.attack import malicious_partitions, poison, popular_items, target_exposure, target_items
from advrec.federated.defence import DEFENCES, configure
from advrec.federated.fcf import FCFSettings, client_metrics, client_step, metric_sums
from advrec.federated.partitions import NodeData, read_partition, write_partition
from advrec.federated.privacy import epsilon_spent, noise_multiplier, sampled_users
from advrec.federated.sampling import Among, NodeSampler, partition_reply
from advrec.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "model": "fcf",  # "fcf" (federated iALS) or "multvae" (FedAvg of a MultVAE's weights, `neural`)
    "dataset": "ml-100k",
    "data-dir": "",  # "" reads $ADVREC_DATA_DIR (or the cache) as `load_dataset` does
    "min-rating": 4.0,
    "split-seed": 2020,
    "split-dir": "",  # a saved split (`Split.save`) to federate instead of splitting `dataset`
    "factors": 64,
    "alpha": 10.0,
    "reg": 10.0,
    "lr": 1.0,  # the clients' step on the mean user gradient
    "clip": 0.0,  # per-user clipping bound of an update (0: none)
    "epsilon": 0.0,  # user-level (ε, delta)-DP of the whole run (0: no noise)
    "delta": 1e-6,
    "user-rate": 1.0,  # each user takes part in a round with this probability (Poisson sampling)
    "rounds": 30,
    "fraction-train": 1.0,
    "min-nodes": 1,  # a round starts once this many nodes are connected (a deployment: all of them)
    "round-timeout": 3600.0,  # seconds a round waits for replies; a node that has not answered by then is left out
    "strategy": "fedadam",
    "server-lr": 0.01,
    "seed": 2020,
    "evaluate-every": 1,  # rounds between evaluations (the last round is always evaluated)
    "out": "",
    # the catalogue's and the federation's sizes, public facts the server needs (the initial factors, DP's
    # denominator); 0: read from the data, which only a simulation should let the server do
    "n-items": 0,
    "n-users": 0,
    # poisoning experiments (`advrec.federated.attack`): target items tracked by the evaluation (their exposure
    # "target-er@10"), the share of nodes that attack them, their goal's norm over the popular items' mean norm
    "targets": 0,
    "attack": "",  # "" or "popularity"
    "attack-share": 0.0,
    "attack-scale": 1.5,
    # robust aggregation (`advrec.federated.defence`): "" or a name of DEFENCES, the malicious nodes Krum / Bulyan
    # assume, the share the trimmed mean cuts from each side
    "defence": "",
    "assumed-malicious": 0,
    "trim": 0.1,
    # secure aggregation (`advrec.federated.secagg`, Flower's SecAgg+): the server sees only the sum of the
    # updates; the key shares per node (capped by min-nodes) and the range values are quantised in
    "secagg": False,
    "secagg-shares": 10,
    "secagg-range": 8.0,
    # MultVAE (`advrec.federated.neural`): epochs each node trains per round, its Adam step size and batch, the
    # network (hidden and latent sizes, input dropout) and the KL weight β
    "local-epochs": 1,
    "local-lr": 1e-3,
    "batch-size": 500,
    "hidden": 600,
    "latent": 32,
    "dropout": 0.8,
    "beta": 0.2,
}
MODELS = ("fcf", "multvae")
# what a federation of each model releases: `<name>.safetensors` in its `out` folder
RELEASED = {"fcf": "item_factors", "multvae": "network"}
STRATEGIES = ("fedavg", "fedadam", "fedyogi")
ATTACKS = ("", "popularity")
Metrics = dict[str, int | float | list[int] | list[float]]  # what a Flower MetricRecord holds
# per process (a simulation actor serves many rounds): the interactions, their split, the users' permutation
_SPLITS: dict[tuple, tuple[Interactions, Split, np.ndarray]] = {}
# per process: each node's rows and its partition file's header (a simulation's actor serves several nodes)
_NODES: dict[tuple, tuple[NodeData, dict[str, int]]] = {}


def settings_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """`DEFAULTS` overridden by `config` (a run config), refusing unknown keys and values of the wrong type."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown federated settings {unknown}; known: {', '.join(DEFAULTS)}")
    out = dict(DEFAULTS)
    for key, value in config.items():
        want = type(DEFAULTS[key])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool) != (want is bool):
            raise ConfigError(f"federated setting {key!r} must be {want.__name__}, got {value!r}")
        out[key] = value
    if out["strategy"] not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {out['strategy']!r}")
    if out["n-items"] < 0 or out["n-users"] < 0:
        raise ConfigError(f"n-items and n-users must be ≥ 0, got {out['n-items']} and {out['n-users']}")
    for key in ("rounds", "factors", "evaluate-every", "min-nodes", "local-epochs", "batch-size", "hidden", "latent"):
        if out[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {out[key]}")
    if out["epsilon"] < 0 or (out["epsilon"] > 0 and not out["clip"] > 0):
        raise ConfigError(f"epsilon {out['epsilon']} needs a positive clip (got {out['clip']}); epsilon 0 is no DP")
    if not 0 < out["user-rate"] <= 1:
        raise ConfigError(f"user-rate must lie in (0, 1], got {out['user-rate']}")
    check_options(out)
    return out


def check_options(s: Mapping[str, Any]) -> None:
    """Refuses inconsistent model, attack, defence, secure-aggregation and timeout settings."""
    if s["model"] not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {s['model']!r}")
    if s["model"] == "multvae" and (s["epsilon"] > 0 or s["secagg"] or s["attack"]):
        raise ConfigError("user-level DP, SecAgg+ and the poisoning experiments are built for fcf, not multvae")
    if not (0 <= s["dropout"] < 1 and s["beta"] >= 0 and s["local-lr"] > 0):
        raise ConfigError("dropout must lie in [0, 1), beta be ≥ 0 and local-lr positive")
    if s["attack"] not in ATTACKS:
        raise ConfigError(f"attack must be one of {ATTACKS}, got {s['attack']!r}")
    if s["defence"] and s["defence"] not in DEFENCES:
        raise ConfigError(f"defence must be one of {', '.join(DEFENCES)} (or empty), got {s['defence']!r}")
    if s["targets"] < 0 or s["assumed-malicious"] < 0 or s["attack-scale"] < 0:
        raise ConfigError("targets, assumed-malicious and attack-scale must be ≥ 0")
    if s["attack"] and not (s["targets"] > 0 and 0 < s["attack-share"] < 1):
        raise ConfigError(f"attack {s['attack']!r} needs targets > 0 and an attack-share in (0, 1)")
    if not 0 <= s["trim"] < 0.5:
        raise ConfigError(f"trim must lie in [0, 0.5), got {s['trim']}")
    if s["defence"] and s["epsilon"] > 0:
        raise ConfigError("a defence replaces the noisy sum that differential privacy accounts for: not both")
    if s["defence"] and s["secagg"]:
        raise ConfigError("secure aggregation shows the server only the sum: a defence needs each node's update")
    if not 0 < s["fraction-train"] <= 1:
        raise ConfigError(f"fraction-train must lie in (0, 1], got {s['fraction-train']}")
    if s["fraction-train"] < 1 and (s["epsilon"] > 0 or s["secagg"]):
        raise ConfigError(
            "fraction-train < 1 samples nodes; with DP (sampling users, user-rate) or SecAgg+ (an "
            "unweighted mean over all nodes) every node takes part: set fraction-train 1"
        )
    if not s["round-timeout"] > 0:
        raise ConfigError(f"round-timeout must be positive, got {s['round-timeout']}")
    if s["secagg"] and (s["secagg-shares"] < 3 or not s["secagg-range"] > 0):
        raise ConfigError("secagg-shares must be at least 3 and secagg-range positive")


def fcf_settings(s: Mapping[str, Any], n_users: int) -> FCFSettings:
    clip = float(s["clip"])
    return FCFSettings(alpha=s["alpha"], reg=s["reg"], lr=s["lr"], clip=clip if clip > 0 else None, n_users=n_users)


def _federation(s: Mapping[str, Any]) -> tuple[Interactions, Split, np.ndarray]:
    """The interactions, their split and a seeded permutation of the users, loaded once per process."""
    key = (s["split-dir"],) if s["split-dir"] else (s["dataset"], s["data-dir"], s["min-rating"], s["split-seed"])
    if key not in _SPLITS:
        if s["split-dir"]:  # a saved split (a run's, e.g. without a forgotten user)
            split = Split.load(s["split-dir"])
            X = split.train
        else:
            X = load_dataset(s["dataset"], s["data-dir"] or None, min_rating=s["min-rating"])
            split = ratio_split(X, random_state=s["split-seed"])
        order = np.random.default_rng(s["split-seed"]).permutation(split.n_users)
        _SPLITS[key] = (X, split, order)
    return _SPLITS[key]


def forget_cache(split_dir: str) -> None:
    """Drops this process's copies of the split saved at `split_dir` and of its nodes' rows."""
    _SPLITS.pop((split_dir,), None)
    for key in [k for k in _NODES if k[:1] == (split_dir,)]:
        del _NODES[key]


def federation_data(s: Mapping[str, Any]) -> tuple[Split, np.ndarray]:
    """The split and a seeded permutation of its users (dealt to partitions in turn), cached per process."""
    _, split, order = _federation(s)
    return split, order


def federation_interactions(s: Mapping[str, Any]) -> Interactions:
    """The interactions `federation_data` split (the run directory's id maps come from them)."""
    return _federation(s)[0]


def partition_users(context: Context, order: np.ndarray) -> np.ndarray:
    """The users of this node: every `num-partitions`-th user of the permutation from `partition-id` on (node
    config; `partition_id` reads the one)."""
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        raise ConfigError("a federated client needs node config 'partition-id' and 'num-partitions'")
    return dealt(order, int(node["partition-id"]), int(node["num-partitions"]))


def dealt(order: np.ndarray, pid: int, parts: int) -> np.ndarray:
    """Partition `pid` of `parts`: every `parts`-th user of the permutation `order` from `pid` on, sorted."""
    if not 0 <= pid < parts:
        raise ConfigError(f"partition-id {pid} is not in [0, {parts})")
    return np.sort(order[pid::parts])


def write_partitions(config: Mapping[str, Any], partitions: int, folder: Path) -> list[Path]:
    """Each node's file for a deployment, `folder/partition-<p>.safetensors` (`advrec.federated.partitions`): the
    split of `config` dealt to `partitions` nodes as a simulation deals it. Start SuperNode p with node config
    `data-file=<its file> partition-id=p num-partitions=<partitions>`."""
    s = settings_of(config)
    split, order = federation_data(s)
    header = {"num-partitions": partitions, "n-items": split.n_items, "n-users": split.n_users}
    return [
        write_partition(
            folder / f"partition-{p}.safetensors",
            NodeData.of_split(split, dealt(order, p, partitions)),
            {**header, "partition-id": p},
        )
        for p in range(partitions)
    ]


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def parts(context: Context) -> int:
    return int(context.node_config["num-partitions"])


def sizes(s: Mapping[str, Any]) -> tuple[int, int]:
    """(items, users) of the federation: `n-items` / `n-users` when set, else read from the data."""
    if s["n-items"] > 0 and s["n-users"] > 0:
        return s["n-items"], s["n-users"]
    split, _ = federation_data(s)
    return split.n_items, split.n_users


def node_data(s: Mapping[str, Any], context: Context) -> NodeData:
    """This node's users' rows: from its partition file (node config `data-file`, a deployment) or from the whole
    split (a simulation); cached per process."""
    node = context.node_config
    path = str(node.get("data-file", ""))
    if not path:
        key = (s["split-dir"] or s["dataset"], s["data-dir"], s["min-rating"], s["split-seed"], partition_id(context),
               parts(context))  # fmt: skip
        if key not in _NODES:
            split, order = federation_data(s)
            _NODES[key] = NodeData.of_split(split, partition_users(context, order)), {}
        return _NODES[key][0]
    if (path,) not in _NODES:
        _NODES[(path,)] = read_partition(path)
    data, header = _NODES[(path,)]
    for name in ("partition-id", "num-partitions"):
        if name in node and int(node[name]) != header[name]:
            raise ConfigError(f"{path} holds {name} {header[name]}, but this node was started with {node[name]}")
    if s["n-items"] and header["n-items"] != s["n-items"]:
        raise ConfigError(f"{path} has {header['n-items']} items; the run's catalogue has {s['n-items']}")
    return data


def node_update(s: Mapping[str, Any], context: Context, Q: np.ndarray, server_round: int) -> tuple[np.ndarray, Metrics]:
    """One round on this node's users: the item factors plus the mean of their updates (over the expected count
    of users taking part, so that the mean weighted by the partition's users, public, is Q + Σ_u Δ_u / (q·N)), and
    the node's metrics with "num-examples". A malicious node of a poisoning experiment (a simulation, whose
    attacker knows the items' popularity) poisons it."""
    data = node_data(s, context)
    n = data.train.shape[0]
    taking_part = sampled_users(n, s["user-rate"], s["seed"], server_round, partition_id(context))
    t0 = time.perf_counter()
    total, stats = client_step(data.train[taking_part], Q, fcf_settings(s, sizes(s)[1]))
    metrics: Metrics = {"num-examples": n}
    metrics.update({k: v for k, v in stats.items() if k != "users"}, **{"client-seconds": time.perf_counter() - t0})
    update = total / max(s["user-rate"] * n, 1e-12)
    malicious = malicious_partitions(parts(context), s["attack-share"] if s["attack"] else 0.0, s["seed"])
    if partition_id(context) in malicious:
        split, _ = federation_data(s)
        targets = target_items(split.train.matrix, s["targets"], s["seed"])
        boost = parts(context) / len(malicious)
        update = poison(update, Q, targets, popular_items(split.train.matrix), s["attack-scale"], boost)
    return (Q + update).astype(Q.dtype), metrics


def node_metrics(s: Mapping[str, Any], context: Context, Q: np.ndarray) -> Metrics:
    """Sums of ranking metrics of this node's users on their validation and test items ("valid-ndcg@10", ...,
    with "valid-users" and "test-users"), each user scored on the node from their own history; with `targets`
    (a poisoning experiment), the targets' exposure among them ("target-er@10" over "target-users")."""
    data = node_data(s, context)
    settings = fcf_settings(s, sizes(s)[1])
    metrics = _part_sums(data, lambda es: client_metrics(es, Q, settings))
    if s["targets"]:
        split, _ = federation_data(s)
        targets = target_items(split.train.matrix, s["targets"], s["seed"])
        hits, n = target_exposure(data.train, Q, settings, targets)
        metrics.update({"target-er@10": hits, "target-users": n})
    return metrics


def _part_sums(data: NodeData, sums_of: Callable[[EvalSet], dict]) -> Metrics:
    metrics: Metrics = {}
    for part in ("valid", "test"):
        sums = sums_of(data.eval_set(part))
        n = sums.pop("users")
        metrics.update({f"{part}-{k}": v for k, v in sums.items()}, **{f"{part}-users": n})
    return metrics


def multvae_update(
    s: Mapping[str, Any], context: Context, weights: Mapping[str, np.ndarray], server_round: int
) -> tuple[dict[str, np.ndarray], Metrics]:
    """A MultVAE node's round: `local-epochs` epochs on its users from the server's weights."""
    data = node_data(s, context)
    seed = neural.node_seed(s, server_round, partition_id(context))
    new, stats = neural.local_update(s, data.train, weights, seed)
    return new, {"num-examples": data.train.shape[0], **stats}


def multvae_metrics(s: Mapping[str, Any], context: Context, weights: Mapping[str, np.ndarray]) -> Metrics:
    """Sums of ranking metrics of this node's users (as `node_metrics`), each scored from their own history."""
    data = node_data(s, context)
    model = neural.served_model(s, weights, data.train)
    return _part_sums(data, lambda es: metric_sums(es, model._score, (10, 20)))


def make_client_app(bound: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; `bound` settings, when given, come under each run's own run config."""
    app = ClientApp()

    def setting(context: Context) -> dict[str, Any]:
        return settings_of({**(bound or {}), **context.run_config})

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """`node_update` on the item factors received."""
        s, server_round = setting(context), int(msg.content.config_records["config"]["server-round"])  # type: ignore[arg-type]
        if s["model"] == "multvae":
            got = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
            new, metrics = multvae_update(s, context, got, server_round)
            arrays = ArrayRecord({k: Array(v) for k, v in new.items()})
        else:
            Q = msg.content.array_records["arrays"].to_numpy_ndarrays()[0]
            sent, metrics = node_update(s, context, Q, server_round)
            arrays = ArrayRecord([sent])
        return Message(content=RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """`node_metrics` of the item factors received (sums: the server adds them up, `sum_metrics`)."""
        s, record = setting(context), msg.content.array_records["arrays"]
        if s["model"] == "multvae":
            metrics = multvae_metrics(s, context, {k: a.numpy() for k, a in record.items()})
        else:
            metrics = node_metrics(s, context, record.to_numpy_ndarrays()[0])
        metrics["num-examples"] = 1
        return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """This node's partition id, by which the server samples the nodes of a round."""
        return partition_reply(msg, partition_id(context))

    return app


def sum_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Per-user means over all nodes from the nodes' sums: "<part>-<metric>" summed, divided by "<part>-users"."""
    total: dict[str, float] = {}
    for record in records:
        for metrics in record.metric_records.values():
            for key, value in metrics.items():
                if key != weight_key and isinstance(value, int | float):
                    total[key] = total.get(key, 0.0) + float(value)
    out: Metrics = {}
    for key, value in total.items():
        part = key.split("-", 1)[0]
        if not key.endswith("-users"):
            out[key] = value / max(total.get(f"{part}-users", 0.0), 1.0)
    return MetricRecord(out)


class NoisyMean(FedAvg):
    """FedAvg's weighted mean plus Gaussian noise of standard deviation `noise_std` on every coordinate (before a
    server optimiser that inherits from it reads the mean), from a seeded generator."""

    noise_std: float = 0.0
    noise_rng: np.random.Generator | None = None

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.noise_std <= 0 or self.noise_rng is None:
            return arrays, metrics
        noisy = {}
        for key in arrays:
            a = arrays[key].numpy()
            noisy[key] = Array(np.asarray(a + self.noise_rng.normal(0.0, self.noise_std, a.shape).astype(a.dtype)))
        return ArrayRecord(noisy), metrics


def make_strategy(s: Mapping[str, Any], noise_std: float = 0.0) -> FedAvg:
    """The aggregation of `strategy`, evaluating through the clients every `evaluate-every` rounds and after the
    last; with `noise_std`, Gaussian noise on the clients' mean before the server optimiser; with `defence`, that
    robust aggregate in place of the mean (under the server optimiser too)."""
    base = {"fedavg": None, "fedadam": FedAdam, "fedyogi": FedYogi}[s["strategy"]]
    below = DEFENCES[s["defence"]] if s["defence"] else NoisyMean  # what the server optimiser reads
    every, last, defence = s["evaluate-every"], s["rounds"], s["defence"]
    bases = (below,) if base is None else (base, below)

    sampler = NodeSampler(s["seed"], s["fraction-train"], s["min-nodes"], s["round-timeout"])

    class Strategy(*bases):  # type: ignore[misc]
        noise_rng = np.random.default_rng([s["seed"], 7])

        def configure_train(self, server_round: int, arrays: ArrayRecord, config: Any, grid: Grid) -> Any:
            nodes = sampler.sample(grid, server_round)
            return super().configure_train(server_round, arrays, config, Among(grid, nodes))

        def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: Any, grid: Grid) -> Any:
            if server_round % every and server_round != last:
                return []
            return super().configure_evaluate(server_round, arrays, config, Among(grid, sampler.connected(grid)))

        def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            if defence == "multikrum":  # Multi-Krum keeps all but the assumed malicious
                self.num_nodes_to_select = max(1, len(replies) - s["assumed-malicious"])
            return super().aggregate_train(server_round, replies)

    # the sampler picks the nodes (after waiting for min-nodes); the strategy takes all it is shown
    common = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 1, "min_evaluate_nodes": 1,
              "min_available_nodes": 1, "evaluate_metrics_aggr_fn": sum_metrics}  # fmt: skip
    strategy = (
        Strategy(**common)
        if base is None
        else Strategy(**common, eta=s["server-lr"], eta_l=s["lr"], beta_1=0.9, beta_2=0.99, tau=1e-8)
    )
    strategy.noise_std = noise_std
    configure(strategy, defence, s["assumed-malicious"], s["trim"])
    return strategy


def make_server_app(bound: Mapping[str, Any] | None = None) -> ServerApp:
    """The ServerApp; `bound` settings, when given, come under each run's own run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        """Runs `rounds` rounds from seeded item factors (a MultVAE: seeded weights); writes the arrays of the
        round with the best validation NDCG@10 and the rounds' history to `out`."""
        s = settings_of({**(bound or {}), **context.run_config})
        n_items, n_users = sizes(s)
        rng = np.random.default_rng(s["seed"])
        Q0 = rng.normal(scale=0.1 / np.sqrt(s["factors"]), size=(n_items, s["factors"])).astype(np.float32)
        initial = ArrayRecord([Q0])
        if s["model"] == "multvae":
            initial = ArrayRecord({k: Array(v) for k, v in neural.initial_weights(s, n_items).items()})
        snapshots: dict[int, dict[str, np.ndarray]] = {}

        def keep(server_round: int, arrays: ArrayRecord) -> None:  # the arrays the clients evaluate this round
            if server_round and not (server_round % s["evaluate-every"] and server_round != s["rounds"]):
                named = {k: a.numpy() for k, a in arrays.items()}
                snapshots[server_round] = (
                    named if s["model"] == "multvae" else {"item_factors": next(iter(named.values()))}
                )

        sigma, std = 0.0, 0.0
        if s["epsilon"] > 0:  # σ·C on the sum of clipped updates, divided by the expected count of users
            sigma = noise_multiplier(s["epsilon"], s["delta"], s["user-rate"], s["rounds"])
            std = sigma * s["clip"] / (s["user-rate"] * n_users)
        t0 = time.perf_counter()
        if s["secagg"]:
            from advrec.federated.secagg import run_server

            out = run_server(grid, context, s, Q0, std)
            snapshots = {r: {"item_factors": Q} for r, Q in out["snapshots"].items()}
            evaluated, train = out["evaluate"], out["train"]
        else:
            result = make_strategy(s, std).start(grid=grid, initial_arrays=initial, num_rounds=s["rounds"],
                                                 timeout=s["round-timeout"], evaluate_fn=keep)  # fmt: skip
            evaluated = {r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()}
            train = {r: dict(m) for r, m in result.train_metrics_clientapp.items()}
        seconds = time.perf_counter() - t0
        best = max(evaluated, key=lambda r: (evaluated[r].get("valid-ndcg@10", -1.0), -r))
        history = {
            "settings": s,
            "seconds": seconds,
            "best_round": best,
            "noise_multiplier": sigma,
            "epsilon": epsilon_spent(sigma, s["delta"], s["user-rate"], s["rounds"]) if sigma else None,
            "train": {str(r): m for r, m in train.items()},
            "evaluate": {str(r): m for r, m in evaluated.items()},
        }
        if s["out"]:
            save_result(Path(s["out"]), RELEASED[s["model"]], snapshots[best], history)

    return app


# the apps a deployment loads (`advrec.federated.app:client_app`, `...:server_app`), configured by the run config
client_app = make_client_app()
server_app = make_server_app()


def save_result(folder: Path, name: str, arrays: Mapping[str, np.ndarray], history: dict) -> None:
    """`<name>.safetensors` (the released arrays: "item_factors", or a MultVAE's "network") and `history.json` in
    `folder`, each written whole or not at all."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{name}.safetensors", lambda tmp: save_file(dict(arrays), tmp))
    atomic_write_text(folder / "history.json", json.dumps(history, indent=2, default=float))


def write_flower_app(folder: Path, config: Mapping[str, Any]) -> Path:
    """A Flower App project in `folder` (its pyproject.toml) whose components are this module's apps and whose
    run config is `config` over `DEFAULTS`: what `flwr run FOLDER SUPERLINK` submits to a deployment. The apps
    come from the installed advrec; the project holds no code. The sizes of the catalogue and of the federation are
    written in (read here, on the operator's side), so the server never loads the interactions."""
    s = settings_of(config)
    s["n-items"], s["n-users"] = sizes(s)
    client = "secagg" if s["secagg"] else "app"  # SecAgg+ runs on Flower's legacy client API
    lines = [
        "[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
        "[project]", 'name = "advrec-fcf"', 'version = "1.0.0"', 'description = "Federated implicit ALS (advrec)"',
        'license = "Apache-2.0"', "dependencies = []", "", "[tool.hatch.build.targets.wheel]", 'packages = ["."]', "",
        "[tool.flwr.app]", 'publisher = "advrec"', "", "[tool.flwr.app.components]",
        'serverapp = "advrec.federated.app:server_app"', f'clientapp = "advrec.federated.{client}:client_app"', "",
        "[tool.flwr.app.config]", *(f"{key} = {json.dumps(value)}" for key, value in s.items()),
    ]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "pyproject.toml", "\n".join(lines) + "\n")
    return folder


def simulate(config: Mapping[str, Any], partitions: int, threads_per_client: int = 1) -> None:
    """Runs the apps on Flower's simulation engine (Ray): `partitions` virtual nodes, each a client of `config`
    (bound to the apps: a simulation started from Python has an empty run config)."""
    import os

    from flwr.simulation import run_simulation

    s = settings_of(config)
    # Ray starts its workers at niceness 15: beside any other job the clients, which are the work, would starve
    os.environ.setdefault("RAY_worker_niceness", "0")
    backend: dict[str, Any] = {
        "client_resources": {"num_cpus": threads_per_client, "num_gpus": 0.0},
        "init_args": {"num_cpus": max(1, threads_per_client), "include_dashboard": False},
    }
    # every virtual node takes part from the first round: a round may otherwise start before all have registered
    s["min-nodes"] = max(s["min-nodes"], partitions)
    if s["secagg"]:
        from advrec.federated import secagg

        client = secagg.make_client_app(s)
    else:
        client = make_client_app(s)
    run_simulation(server_app=make_server_app(s), client_app=client, num_supernodes=partitions,
                   backend_config=backend)  # fmt: skip
