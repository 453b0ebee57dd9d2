"""SASRec with and without adversarial training (APR on its item embeddings), under FGSM and PGD attacks.

Protocol: Amazon Scientific, UniSRec's published leave-last-out split, full ranking, seen items excluded. SASRec in
the setting of benchmarks/sequential.py (max_len 50, dropout 0.5, 2 heads, 64 dimensions, lr 3e-3), early stopping
on validation NDCG@10; APR continues from that model with L(Θ) + adv_reg · L(Θ + Δ_adv), Δ_adv the fast-gradient
perturbation of the item table (row norms eps_train), again with early stopping on validation. eps_train is chosen
on validation only: the setting that keeps the largest share of its validation NDCG@10 under PGD at eps 0.5, among
those whose clean validation NDCG@10 is at least 98 % of the undefended model's. The attacks perturb the item table
(shared by input and output) to raise the next-item cross-entropy of the training sequences: FGSM (one step) and
PGD (10 steps of eps/4, projected), at eps ∈ {0.1, 0.25, 0.5, 1}; "share" is the attacked test NDCG@10 over the
clean one. The mean L2 norm of the item rows is recorded (the attack's eps is absolute). Each seed runs in a fresh
process with one thread.

Usage: python benchmarks/sequential_adversarial.py [--seeds 2020 2021 2022] [--eps-train 0.1 0.25] [--adv-reg 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "sequential_adversarial"
SASREC = {"max_len": 50, "dropout": 0.5, "heads": 2, "dim": 64, "lr": 3e-3, "device": "cpu"}
EPS = (0.1, 0.25, 0.5, 1.0)
SELECT_EPS, KEEP_CLEAN = 0.5, 0.98  # the attack eps the defence is chosen for; the clean validation share it keeps


def row_norm(model: Any) -> float:
    """Mean L2 norm of the item-embedding rows (padding row left out)."""
    return float(model.embedding_tables()["item"].detach()[1:].norm(dim=1).mean())


def choose_apr(clean: Any, split: Any, seed: int, eps_grid: list[float], adv_reg: float) -> tuple[Any, float, list]:
    """APR fitted for each eps_train; the one chosen on validation (see the module docstring), its fit time and
    every candidate's validation figures."""
    from advrec.robustness.perturb import adversarial_fit, robustness_curve

    def valid_figures(model: Any) -> tuple[float, float]:
        df = robustness_curve(model, split, eps=(SELECT_EPS,), methods=("pgd",), random_state=seed, on="valid")
        return float(df["ndcg@10"].iloc[0]), float(df["share"].iloc[1])

    clean_valid, clean_share = valid_figures(clean)
    candidates = [{"eps_train": 0.0, "valid_ndcg@10": clean_valid, "valid_share_pgd": clean_share}]
    best: tuple[Any, float] | None = None
    best_share = -1.0
    for eps_train in eps_grid:
        t0 = time.perf_counter()
        adv = adversarial_fit(clean, split.train, valid=split, eps=eps_train, adv_reg=adv_reg, pretrained=clean)
        fit_s = time.perf_counter() - t0
        valid, share = valid_figures(adv)
        candidates.append({"eps_train": eps_train, "valid_ndcg@10": valid, "valid_share_pgd": share,
                           "fit_s": fit_s, "epochs_run": adv.epochs_run_, "row_norm": row_norm(adv)})  # fmt: skip
        print(seed, candidates[-1], flush=True)
        if valid >= KEEP_CLEAN * clean_valid and share > best_share:
            best, best_share = (adv, fit_s), share
    if best is None:
        raise SystemExit(f"seed {seed}: no eps_train in {eps_grid} keeps {KEEP_CLEAN:.0%} of clean validation NDCG@10")
    return best[0], best[1], candidates


def run_seed(seed: int, eps_grid: list[float], adv_reg: float) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    from advrec.data.datasets import official_split
    from advrec.models import SASRec
    from advrec.robustness.perturb import robustness_curve

    split = official_split("amazon-scientific-unisrec")
    t0 = time.perf_counter()
    clean = SASRec(random_state=seed, **SASREC).fit(split.train, valid=split)
    clean_s = time.perf_counter() - t0
    adv, adv_s, candidates = choose_apr(clean, split, seed, eps_grid, adv_reg)
    chosen = adv.adversarial_["eps"]
    rows = []
    for name, model, fit_s in (("SASRec", clean, clean_s), ("SASRec+APR", adv, adv_s)):
        t0 = time.perf_counter()
        df = robustness_curve(model, split, eps=EPS, methods=("fgsm", "pgd"), random_state=seed)
        curve_s = time.perf_counter() - t0
        for rec in df.to_dict("records"):
            values = {k: float(v) if isinstance(v, float | np.floating) else v for k, v in rec.items()}
            run = {"model": name, "seed": seed, "fit_s": fit_s, "curve_s": curve_s, "epochs_run": model.epochs_run_,
                   "row_norm": row_norm(model), "eps_train": chosen if name == "SASRec+APR" else 0.0,
                   "adv_reg": adv_reg}  # fmt: skip
            if name == "SASRec+APR" and values["method"] == "clean":  # the choice, once per seed
                run["candidates"] = candidates
            rows.append({**run, **values})
    return rows


def summarize(rows: list[dict]) -> str:
    lines = ["| model | attack | eps | NDCG@10 | share of clean | seeds |", "|---|---|---:|---:|---:|---:|"]
    keys = dict.fromkeys((r["model"], r["method"], r["eps"]) for r in rows)
    for model, method, eps in keys:
        rs = [r for r in rows if (r["model"], r["method"], r["eps"]) == (model, method, eps)]
        nd, sh = np.array([r["ndcg@10"] for r in rs]), np.array([r["share"] for r in rs])
        lines.append(f"| {model} | {method} | {eps:g} | {nd.mean():.4f} ± {nd.std():.4f} | {sh.mean():.3f} ± "
                     f"{sh.std():.3f} | {len(rs)} |")  # fmt: skip
    return "\n".join(lines)


def choices(rows: list[dict]) -> str:
    """Per seed: the validation figures of every APR candidate, the one chosen, row norms and the test shares kept
    under PGD at eps 0.5."""
    lines = ["| seed | validation NDCG@10 / share kept under PGD 0.5, per eps_train (0 = no APR) | chosen | "
             "row norm clean → APR | test share PGD 0.5 clean → APR |", "|---:|---|---:|---|---|"]  # fmt: skip
    for seed in dict.fromkeys(r["seed"] for r in rows):
        pick = {(r["model"], r["method"], r["eps"]): r for r in rows if r["seed"] == seed}
        clean, adv = pick["SASRec", "pgd", SELECT_EPS], pick["SASRec+APR", "pgd", SELECT_EPS]
        cands = ", ".join(f"{c['eps_train']:g}: {c['valid_ndcg@10']:.4f} / {c['valid_share_pgd']:.3f}"
                          for c in pick["SASRec+APR", "clean", 0.0]["candidates"])  # fmt: skip
        lines.append(f"| {seed} | {cands} | {adv['eps_train']:g} | {clean['row_norm']:.3f} → {adv['row_norm']:.3f} | "
                     f"{clean['share']:.3f} → {adv['share']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        for method, style in (("fgsm", "--"), ("pgd", "-")):
            xs = [0.0, *EPS]
            ys = [np.mean([r["share"] for r in rows if r["model"] == model and r["method"] == "clean"])]
            ys += [np.mean([r["share"] for r in rows if (r["model"], r["method"], r["eps"]) == (model, method, e)])
                   for e in EPS]  # fmt: skip
            ax.plot(xs, ys, style, marker="o", label=f"{model}, {method.upper()}")
    ax.set_xlabel("attack eps (L2 norm per item-embedding row)")
    ax.set_ylabel("share of clean test NDCG@10 kept")
    ax.set_title("SASRec on Amazon Scientific under embedding attacks")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    from advrec.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--eps-train", type=float, nargs="+", default=[0.1, 0.25])
    ap.add_argument("--adv-reg", type=float, default=1.0)
    args = ap.parse_args()
    rows: list[dict] = []
    ctx = get_context("spawn")
    for seed in args.seeds:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            rows += pool.submit(run_seed, seed, args.eps_train, args.adv_reg).result()
        print(summarize(rows), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT.with_suffix(".json"), json.dumps(rows, indent=2))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    md = OUT.with_suffix(".md")
    notes = md.read_text().partition("\nNotes:")[1:] if md.exists() else ("", "")
    text = (f"# SASRec under embedding attacks, with and without APR ({stamp})\n\n{summarize(rows)}\n\n"
            f"APR's setting, chosen on validation:\n\n{choices(rows)}\n{''.join(notes)}")  # fmt: skip
    atomic_write_text(md, text)
    plot(rows, OUT.with_suffix(".png"))


if __name__ == "__main__":
    main()
