"""Poisoned clients against robust aggregation in federated iALS (FCF) on ml-1m.

Protocol: the split of `benchmarks/federated.py` (ml-1m ratings ≥ 4, `ratio_split` 80/10/10, seed 2020); FCF on
Flower's simulation engine with `--partitions` nodes (about 60 users each at 100), every node in every round,
`--strategy` (default FedAvg, clients' step `--lr` 30: it trains in about 10 rounds; FedAdam caps each coordinate's
move at about its server lr per round, which slows honest training and attacks alike), `--rounds` rounds, evaluated
through the nodes every `--evaluate-every` rounds; the released factors are those of the round with the best
validation NDCG@10, and every figure is read there.

- Attack (`advrec.federated.attack`): a seeded `--shares` of the nodes replace the 5 target items' rows of their
  honest update by a move to a goal (the 50 most popular items' mean direction, at `--scale` times their mean
  norm), boosted by nodes / malicious nodes. Targets: 5 seeded items among those with at most the median training
  count.
- Defence (`advrec.federated.defence`): Flower's Krum / Multi-Krum / Bulyan (assuming the attack's number of
  malicious nodes, at least 1), median, trimmed mean (`trim` 0.1 from each side), and advrec's outlier filter,
  each in place of the mean (under the server optimiser when there is one).
- Target ER@10 (FedRecAttack's exposure ratio, the "target HR@10"): over the users without a target in their
  training rows, the share of targets in their top 10 (training items excluded), averaged. Gain: attacked minus
  clean under the same aggregation; the share of the undefended gain a defence removes is 1 − its gain / FedAvg's.

Rows are kept per (defence, its trimmed share for the trimmed mean, share); a run adds or replaces its own.

Usage: python benchmarks/federated_poisoning.py [--defences none trimmed-mean ...] [--shares 0 0.01 0.05]
       [--rounds 15] [--strategy fedavg] [--lr 30] [--partitions 100] [--scale 1.5] [--trim 0.1]
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
OUT_JSON, OUT_MD = RESULTS / "federated_poisoning.json", RESULTS / "federated_poisoning.md"
SETTING = {"dataset": "ml-1m", "min-rating": 4.0, "split-seed": 2020, "factors": 64, "reg": 10.0, "alpha": 10.0,
           "targets": 5}  # fmt: skip
DEFENCES = ("none", "trimmed-mean", "median", "outlier-filter", "multikrum", "krum", "bulyan")


def run(defence: str, share: float, args: argparse.Namespace) -> dict:
    from advrec.federated.app import simulate

    malicious = 0 if share == 0 else max(1, round(share * args.partitions))
    config = {**SETTING, "rounds": args.rounds, "strategy": args.strategy, "lr": args.lr, "server-lr": args.server_lr,
              "evaluate-every": args.evaluate_every, "trim": args.trim,
              "defence": "" if defence == "none" else defence, "assumed-malicious": max(1, malicious),
              "attack": "popularity" if share else "", "attack-share": share, "attack-scale": args.scale}  # fmt: skip
    with TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate({**config, "out": tmp}, partitions=args.partitions)
        wall = time.perf_counter() - t0
        history = json.loads((Path(tmp) / "history.json").read_text())
    best = history["best_round"]
    at = history["evaluate"][str(best)]
    return {
        "defence": defence, "share": share, "malicious": malicious, "partitions": args.partitions,
        "rounds": args.rounds, "strategy": args.strategy, "lr": args.lr, "server_lr": args.server_lr,
        "scale": args.scale, "trim": args.trim, "best": best, "wall_s": wall,
        "test": {"ndcg@10": at["test-ndcg@10"], "recall@20": at["test-recall@20"]},
        "target_er@10": at["target-er@10"],
        "curve": {r: {"valid-ndcg@10": m["valid-ndcg@10"], "target-er@10": m["target-er@10"]}
                  for r, m in history["evaluate"].items()},
        "dropped": {r: m["dropped"] for r, m in history["train"].items() if "dropped" in m},  # outlier filter
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def label(r: dict) -> str:
    """The defence of a row, with its trimmed share when it is the trimmed mean."""
    return f"trimmed-mean (β {r.get('trim', 0.1):g})" if r["defence"] == "trimmed-mean" else r["defence"]


def summarize(rows: list[dict]) -> str:
    by = {(label(r), r["share"]): r for r in rows}
    clean_ref = by.get(("none", 0.0))
    head = ["defence", "malicious nodes", "target ER@10", "gain over its clean run", "undefended gain removed",
            "test NDCG@10", "clean NDCG@10 cost", "best round", "wall s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for r in sorted(rows, key=lambda r: (DEFENCES.index(r["defence"]), -r.get("trim", 0.1), r["share"])):
        clean = by.get((label(r), 0.0))
        undefended = by.get(("none", r["share"]))
        gain = r["target_er@10"] - clean["target_er@10"] if clean else float("nan")
        base_gain = undefended["target_er@10"] - clean_ref["target_er@10"] if undefended and clean_ref else None
        removed = f"{1 - gain / base_gain:.0%}" if r["share"] and base_gain and r["defence"] != "none" else ""
        cost = f"{1 - r['test']['ndcg@10'] / clean_ref['test']['ndcg@10']:+.1%}" if clean_ref and not r["share"] else ""
        lines.append(
            f"| {label(r)} | {r['malicious']} of {r['partitions']} ({r['share']:.0%}) | {r['target_er@10']:.4f} | "
            f"{gain:+.4f} | {removed} | {r['test']['ndcg@10']:.4f} | {cost} | {r['best']} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def save(rows: list[dict]) -> None:
    from advrec.io import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT_JSON, json.dumps(rows, indent=2))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    notes = OUT_MD.read_text().partition("\nNotes:")[1:] if OUT_MD.exists() else ("", "")
    title = f"# Poisoned clients and robust aggregation, federated iALS on ml-1m ({stamp})"
    atomic_write_text(OUT_MD, f"{title}\n\n{summarize(rows)}{''.join(notes)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defences", nargs="+", default=list(DEFENCES), choices=DEFENCES)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.01, 0.05])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--evaluate-every", type=int, default=5)
    ap.add_argument("--strategy", default="fedavg", choices=("fedavg", "fedadam", "fedyogi"))
    ap.add_argument("--lr", type=float, default=30.0, help="the clients' step")
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--server-lr", type=float, default=0.01)
    ap.add_argument("--trim", type=float, default=0.1, help="the trimmed mean's share cut from each side")
    ap.add_argument("--scale", type=float, default=1.5, help="the goal's norm over the popular items' mean norm")
    args = ap.parse_args()
    rows = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
    for defence in args.defences:
        for share in args.shares:
            row = run(defence, share, args)
            rows = [r for r in rows if (label(r), r["share"]) != (label(row), share)] + [row]
            save(rows)
            print(summarize(rows), flush=True)


if __name__ == "__main__":
    main()
