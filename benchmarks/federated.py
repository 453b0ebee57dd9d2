"""Federated against centralised training of the same model (implicit ALS; MultVAE) on ml-1m.

Protocol: ml-1m ratings ≥ 4, `ratio_split` 80/10/10 per user (seed 2020); full ranking, the user's training items
excluded; test NDCG@10 and Recall@20 at the iteration / round with the best validation NDCG@10.

- Centralised: `IALS` (64 factors, reg 10, alpha 10), early stopping on validation.
- Federated: FCF (`advrec.federated`) on Flower's simulation engine: `--partitions` virtual nodes share the users
  (each node holds its users' rows and solves their factors), every node takes part in every round, FedAdam on the
  server (lr `--server-lr`), evaluated through the nodes every 10 rounds. Bytes per node per round: the item factors
  down and the node's update up (float32), as Flower's messages carry them.

- Private: the same with user-level DP (`--epsilons`, δ 1e-6; each user clipped to `--clip`, Gaussian noise on the
  sum, every user in every round; `advrec.federated.privacy`), `--rounds` rounds.

- MultVAE (`--model multvae`): centralised `MultVAE` (600-32, dropout 0.8, β annealed to 0.2; early stopping) against
  FedAvg of its weights (`advrec.federated.neural`): each node trains `--local-epochs` epochs (batches of
  `--batch-size`, Adam lr 1e-3, β held at 0.2) on its users from the server's weights each round.

Rows are kept per (model, training, ε): a run adds or replaces its own rows (`--skip-centralised` keeps the stored
one).

Usage: python benchmarks/federated.py [--rounds 150] [--partitions 10] [--server-lr 0.01] [--epsilons 0 8 1]
       [--clip 50] [--skip-centralised]
       python benchmarks/federated.py --model multvae [--rounds 80] [--local-epochs 5] [--batch-size 100]
       python benchmarks/federated.py --secagg-cost 5 [--partitions 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

RESULTS = Path(__file__).resolve().parent / "results"
OUT_JSON, OUT_MD = RESULTS / "federated.json", RESULTS / "federated.md"
MODEL = {"factors": 64, "reg": 10.0, "alpha": 10.0}
SPLIT = {"dataset": "ml-1m", "min-rating": 4.0, "split-seed": 2020}


def centralised(kind: str = "fcf") -> dict:
    import torch

    torch.set_num_threads(1)
    from advrec.data import load_movielens
    from advrec.data.splits import ratio_split
    from advrec.evaluation import evaluate
    from advrec.models import IALS, MultVAE

    split = ratio_split(load_movielens("ml-1m", min_rating=SPLIT["min-rating"]), random_state=SPLIT["split-seed"])
    t0 = time.perf_counter()
    if kind == "multvae":
        model: IALS | MultVAE = MultVAE(device="cpu", random_state=2020).fit(split.train, valid=split)
    else:
        model = IALS(**MODEL, iterations=30, device="cpu", random_state=2020).fit(split.train, valid=split)
    fit_s = time.perf_counter() - t0
    test = evaluate(model, split, ks=(10, 20)).summary
    return {
        "training": "centralised", "model": type(model).__name__, "epsilon": None, "fit_s": fit_s,
        "test": {"ndcg@10": test["ndcg@10"], "recall@20": test["recall@20"]},
        "best": getattr(model, "best_epoch_", None),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def federated(rounds: int, partitions: int, server_lr: float, epsilon: float = 0.0, clip: float = 0.0) -> dict:
    from safetensors.numpy import load_file

    from advrec.federated.app import simulate

    with TemporaryDirectory() as tmp:
        config = {**SPLIT, **MODEL, "rounds": rounds, "strategy": "fedadam", "server-lr": server_lr,
                  "evaluate-every": 10, "out": tmp, "epsilon": epsilon, "clip": clip if epsilon else 0.0}  # fmt: skip
        t0 = time.perf_counter()
        simulate(config, partitions=partitions)
        wall = time.perf_counter() - t0
        history = json.loads((Path(tmp) / "history.json").read_text())
        Q = load_file(str(Path(tmp) / "item_factors.safetensors"))["item_factors"]
    best = history["best_round"]
    at_best = history["evaluate"][str(best)]
    client_s = [m["client-seconds"] for m in history["train"].values()]
    return {
        "training": "federated", "model": "FCF", "epsilon": history["epsilon"], "fit_s": wall,
        "strategy_s": history["seconds"], "noise_multiplier": history["noise_multiplier"], "clip": config["clip"],
        "test": {"ndcg@10": at_best["test-ndcg@10"], "recall@20": at_best["test-recall@20"]},
        "best": best, "rounds": rounds, "partitions": partitions, "server_lr": server_lr,
        "bytes_per_node_round": 2 * Q.size * 4, "mean_client_s": sum(client_s) / len(client_s),
        "curve": {r: m["valid-ndcg@10"] for r, m in history["evaluate"].items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def federated_multvae(rounds: int, partitions: int, local_epochs: int, batch_size: int) -> dict:
    """FedAvg of MultVAE's weights, evaluated through the nodes every 10 rounds."""
    from safetensors.numpy import load_file

    from advrec.federated.app import simulate

    with TemporaryDirectory() as tmp:
        config = {**SPLIT, "model": "multvae", "rounds": rounds, "strategy": "fedavg", "local-epochs": local_epochs,
                  "batch-size": batch_size, "evaluate-every": 10, "out": tmp}  # fmt: skip
        t0 = time.perf_counter()
        simulate(config, partitions=partitions)
        wall = time.perf_counter() - t0
        history = json.loads((Path(tmp) / "history.json").read_text())
        weights = load_file(str(Path(tmp) / "network.safetensors"))
    best = history["best_round"]
    at_best = history["evaluate"][str(best)]
    client_s = [m["client-seconds"] for m in history["train"].values()]
    return {
        "training": "federated", "model": "MultVAE", "epsilon": None, "fit_s": wall, "strategy_s": history["seconds"],
        "test": {"ndcg@10": at_best["test-ndcg@10"], "recall@20": at_best["test-recall@20"]},
        "best": best, "rounds": rounds, "partitions": partitions, "local_epochs": local_epochs,
        "batch_size": batch_size, "bytes_per_node_round": 2 * sum(w.nbytes for w in weights.values()),
        "mean_client_s": sum(client_s) / len(client_s),
        "curve": {r: m["valid-ndcg@10"] for r, m in history["evaluate"].items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def secagg_cost(rounds: int, partitions: int, secagg: bool) -> dict:
    """A short FedAvg run (clients' step 30, evaluated once at the end) with or without SecAgg+: its wall time
    per round and the bytes per node per round."""
    from advrec.federated.app import simulate

    with TemporaryDirectory() as tmp:
        config = {**SPLIT, **MODEL, "rounds": rounds, "strategy": "fedavg", "lr": 30.0, "evaluate-every": rounds,
                  "out": tmp, "secagg": secagg}  # fmt: skip
        t0 = time.perf_counter()
        simulate(config, partitions=partitions)
        wall = time.perf_counter() - t0
        history = json.loads((Path(tmp) / "history.json").read_text())
    floats = 3706 * MODEL["factors"]  # ml-1m ≥ 4 items × factors
    return {
        "training": "cost", "secagg": secagg, "rounds": rounds, "partitions": partitions, "fit_s": wall,
        "strategy_s": history["seconds"], "round_s": history["seconds"] / rounds,
        "bytes_per_node_round": floats * 4 + floats * (8 if secagg else 4),
        "test": {"ndcg@10": history["evaluate"][str(rounds)]["test-ndcg@10"],
                 "recall@20": history["evaluate"][str(rounds)]["test-recall@20"]},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def summarize_cost(rows: list[dict]) -> str:
    rows = [r for r in rows if r["training"] == "cost"]
    if not rows:
        return ""
    lines = ["", "Secure aggregation's cost (FedAvg, clients' step 30, the same rounds with and without SecAgg+):", "",
             "| aggregation | nodes | rounds | s per round | bytes per node per round | test NDCG@10 at the end |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: r["secagg"]):
        lines.append(
            f"| {'SecAgg+' if r['secagg'] else 'plain'} | {r['partitions']} | {r['rounds']} | {r['round_s']:.1f} | "
            f"{r['bytes_per_node_round'] / 1e6:.2f} MB | {r['test']['ndcg@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict]) -> str:
    refs = {r["model"]: r["test"]["ndcg@10"] for r in rows if r["training"] == "centralised"}
    same = {"FCF": "IALS", "MultVAE": "MultVAE"}  # each federated model against the centralised fit of its model
    head = ["training", "model", "ε", "NDCG@10", "Recall@20", "of centralised NDCG@10", "best iteration / round",
            "wall s", "bytes per node per round", "driver peak MB"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in (r for r in rows if r["training"] != "cost"):
        eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        nbytes = f"{r['bytes_per_node_round'] / 1e6:.2f} MB" if "bytes_per_node_round" in r else ""
        ref = refs.get(same.get(r["model"], r["model"]), float("nan"))
        lines.append(
            f"| {r['training']} | {r['model']} | {eps} | {r['test']['ndcg@10']:.4f} | {r['test']['recall@20']:.4f} | "
            f"{r['test']['ndcg@10'] / ref:.1%} | {r['best']} | {r['fit_s']:.0f} | {nbytes} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n" + summarize_cost(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--server-lr", type=float, default=0.01)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.0], help="0: no differential privacy")
    ap.add_argument("--clip", type=float, default=50.0, help="per-user clipping bound under DP")
    ap.add_argument("--skip-centralised", action="store_true")
    ap.add_argument("--model", choices=["fcf", "multvae"], default="fcf")
    ap.add_argument("--local-epochs", type=int, default=5, help="MultVAE: a node's epochs per round")
    ap.add_argument("--batch-size", type=int, default=100, help="MultVAE: a node's batch of users")
    ap.add_argument("--secagg-cost", type=int, default=0, metavar="ROUNDS",
                    help="only time ROUNDS FedAvg rounds with and without SecAgg+")  # fmt: skip
    args = ap.parse_args()
    if args.secagg_cost:
        rows = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
        rows = [r for r in rows if r["training"] != "cost"]
        for secagg in (False, True):
            rows.append(secagg_cost(args.secagg_cost, args.partitions, secagg))
            save(rows)
        print(summarize(rows))
        return
    rows = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
    if not args.skip_centralised:
        row = centralised(args.model)
        rows = [r for r in rows if (r["training"], r.get("model")) != ("centralised", row["model"])] + [row]
        save(rows)
        print(summarize(rows), flush=True)
    if args.model == "multvae":
        rows = [r for r in rows if (r["training"], r.get("model")) != ("federated", "MultVAE")]
        rows.append(federated_multvae(args.rounds, args.partitions, args.local_epochs, args.batch_size))
        save(rows)
        print(summarize(rows))
        return
    for eps in args.epsilons:
        row = federated(args.rounds, args.partitions, args.server_lr, eps, args.clip)
        target = eps or None
        rows = [
            r for r in rows if (r["training"], r.get("model"), r.get("target_epsilon")) != ("federated", "FCF", target)
        ]
        rows.append({**row, "target_epsilon": target})
        save(rows)
    print(summarize(rows))


def save(rows: list[dict]) -> None:
    from advrec.io import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT_JSON, json.dumps(rows, indent=2))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    notes = OUT_MD.read_text().partition("\nNotes:")[1:] if OUT_MD.exists() else ("", "")
    atomic_write_text(
        OUT_MD, f"# Federated vs centralised training, ml-1m ({stamp})\n\n{summarize(rows)}{''.join(notes)}"
    )


if __name__ == "__main__":
    main()
