"""Adversarial robustness on ml-1m: APR vs BPR-MF, embedding attacks, shilling attacks and the detector.

Jobs (`--only`):
- apr: every rating as implicit feedback; leave-one-out by time (last interaction test, the one before
  validation); full ranking over every item the user has not interacted with. BPR-MF trained with early
  stopping on validation NDCG@10; APR continues from it with FGSM perturbations (eps, adv_reg) and early
  stopping. HR/NDCG@50 and @100, mean ± std over seeds.
- apr-paper: the APR paper's own protocol (its public AMF code): MF-BPR without L2, Adagrad lr 0.05, batch 512,
  64 factors, trained `--paper-epochs` epochs with nothing chosen (the paper's baseline); APR continues from that
  last epoch for as many epochs, keeping its best epoch on validation (the paper reads it off the test items).
  Beside them, the same MF-BPR stopped early on validation. Leave-one-out as in apr.
- curves: NDCG@10 on the same test under FGSM and PGD (10 steps of eps/4) on the user and item
  embeddings, eps ∈ {0.1, 0.25, 0.5, 1.0}, for BPR-MF and APR of the first seed.
- shilling: ratings kept (1–5); per-user random 8:1:1 split. Each attack injects fake users (1%, 3%, 5% of
  the genuine users) pushing 5 long-tail targets (10–50 training interactions) at once; filler = median
  profile length. The model is retrained on the poisoned data; target HR@10/@50 over genuine users who
  had not interacted with the target, before and after; with the detector (trained on the clean training
  data poisoned with simulated attacks of random targets and sizes), flagged users are dropped and the
  model retrained. The gan attack samples fake profiles from a MultVAE generator (aggregate posterior).

Usage: python benchmarks/robustness.py [--only apr apr-paper curves shilling report] [--paper-epochs 1000]
       [--seeds 1 2 3] [--dataset ml-1m]
       [--models EASE BPRMF MultVAE] [--attacks random average ...] [--sizes 0.01 0.03 0.05]
       [--cells CFGAN:average:0.03 ...] [--skip-done] [--detector classic|generator]
Shilling rows are saved after each cell.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from advrec.data import load_movielens
from advrec.data.splits import leave_one_out, ratio_split
from advrec.evaluation import evaluate
from advrec.evaluation.report import markdown_table
from advrec.generative import ProfileGenerator
from advrec.io import atomic_write_text
from advrec.models import BPRMF, CFGAN, EASE, MultVAE
from advrec.robustness import adversarial_fit, robustness_curve
from advrec.robustness.attacks import ShillingAttack, inject, pick_targets
from advrec.robustness.detect import ShillingDetector, detection_scores, robust_fit
from advrec.robustness.metrics import attack_effect
from advrec.robustness.report import curve_plot

RESULTS = Path(__file__).resolve().parent / "results"
APR = {"eps": 0.5, "adv_reg": 1.0}
ACCURACY = ("hit@50", "ndcg@50", "hit@100", "ndcg@100", "ndcg@10")
EPS = (0.1, 0.25, 0.5, 1.0)  # embedding-attack budgets
DETECTORS = {
    "classic": "Detector trained on simulated random, average, bandwagon, popular and segment attacks.",
    "generator": "Detector trained on the same simulations plus simulated attacks whose profiles the defender "
    "samples from its own MultVAE generator (fitted on the clean training data, another seed than the "
    "attacker's).",
}
MODELS = {
    "EASE": lambda seed: EASE(l2=500.0),
    "BPRMF": lambda seed: BPRMF(random_state=seed, eval_every=2),
    "MultVAE": lambda seed: MultVAE(random_state=seed),
    "CFGAN": lambda seed: CFGAN(random_state=seed, epochs=300, eval_every=10, patience=5),
}


def timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def accuracy_row(fitted: Any, split: Any, /, **fields: Any) -> dict:
    """`fields` plus the fitted model's epochs (run and kept), seconds per epoch and test ACCURACY; printed."""
    summary = evaluate(fitted, split, ks=(10, 50, 100), metrics=("hit", "ndcg")).summary
    row = {**fields, "epochs": fitted.epochs_run_, "best_epoch": getattr(fitted, "best_epoch_", fitted.epochs_run_),
           "s_per_epoch": fitted.epoch_seconds_, **{k: summary[k] for k in ACCURACY}}  # fmt: skip
    print(row, flush=True)
    return row


def apr_job(seeds: list[int], dataset: str) -> tuple[list[dict], dict[int, tuple[Any, Any, Any]]]:
    X = load_movielens(dataset)
    rows, fitted = [], {}
    for seed in seeds:
        split = leave_one_out(X, random_state=seed)
        bpr, bpr_s = timed(BPRMF(random_state=seed, eval_every=2).fit, split.train, valid=split)
        apr, apr_s = timed(adversarial_fit, BPRMF(random_state=seed, eval_every=2), split.train, valid=split,
                           pretrained=bpr, **APR)  # fmt: skip
        for name, model, secs in (("BPRMF", bpr, bpr_s), ("APR", apr, apr_s)):
            rows.append(accuracy_row(model, split, dataset=dataset, seed=seed, model=name, fit_s=secs))
        fitted[seed] = (split, bpr, apr)
    return rows, fitted


PAPER = {"factors": 64, "reg": 0.0, "batch_size": 512, "lr": 0.05, "optimizer": "adagrad"}


def apr_paper_job(seeds: list[int], dataset: str, epochs: int) -> tuple[list[dict], list[dict]]:
    X = load_movielens(dataset)
    rows, curves = [], []
    for seed in seeds:
        split = leave_one_out(X, random_state=seed)
        long_bpr, long_s = timed(BPRMF(**PAPER, epochs=epochs, random_state=seed).fit, split.train)
        stopped, stopped_s = timed(
            BPRMF(**PAPER, epochs=epochs, eval_every=5, patience=10, random_state=seed).fit, split.train, valid=split
        )
        apr_model = BPRMF(**PAPER, epochs=epochs, eval_every=10, patience=10**6, random_state=seed)
        apr, apr_s = timed(adversarial_fit, apr_model, split.train, valid=split, pretrained=long_bpr, **APR)
        fits = (("BPRMF, last epoch", long_bpr, long_s), ("BPRMF, early-stopped", stopped, stopped_s),
                ("APR, best validation epoch", apr, apr_s))  # fmt: skip
        for name, model, secs in fits:
            rows.append(accuracy_row(model, split, dataset=dataset, seed=seed, model=name, fit_s=secs))
            curve = robustness_curve(model, split, eps=EPS)
            curves += curve.assign(dataset=dataset, seed=seed, model=name).to_dict("records")
    return rows, curves


def curves_job(split: Any, bpr: Any, apr: Any) -> pd.DataFrame:
    frames = []
    for name, model in (("BPRMF", bpr), ("APR", apr)):
        df, secs = timed(robustness_curve, model, split, eps=EPS)
        frames.append(df.assign(model=name))
        print(name, f"{secs:.0f}s", df[["method", "eps", "ndcg@10", "share"]].round(4).to_dict("records"), flush=True)
    return pd.concat(frames, ignore_index=True)


Cell = tuple[str, str, float]  # (model, attack kind, attack size)


def shilling_job(seed: int, cells: list[Cell], detector_kind: str, on_row: Callable[[dict], None]) -> None:
    X = load_movielens("ml-1m")
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=seed)
    train = split.train
    targets = [int(t) for t in pick_targets(train, 5, random_state=seed)]
    gen_aware = "auto" if detector_kind == "generator" else None  # the defender fits its own generator
    detector, det_s = timed(ShillingDetector(generator=gen_aware, random_state=seed).fit, train)
    print(f"detector trained in {det_s:.0f}s on {detector.training_rows_} profiles", flush=True)
    generator = None
    if any(kind == "gan" for _, kind, _ in cells):
        generator = ProfileGenerator(MultVAE(random_state=seed), prior="posterior").fit(train, valid=split)
    clean_fits: dict[str, tuple[Any, float]] = {}
    for name, kind, size in tqdm(cells, desc=f"shilling cells, seed {seed}"):
        valid = split if name in ("BPRMF", "MultVAE", "CFGAN") else None
        if name not in clean_fits:
            clean_fits[name] = timed(MODELS[name](seed).fit, train, valid=valid)
        clean, clean_s = clean_fits[name]
        attack = ShillingAttack(kind, targets, size=size, generator=generator if kind == "gan" else None)
        poisoned, fake = inject(train, attack, random_state=seed)
        attacked, fit_s = timed(MODELS[name](seed).fit, poisoned, valid=valid)
        und = attack_effect(clean, attacked, split, targets)
        flagged = detector.detect(poisoned)
        det = detection_scores(flagged, fake, poisoned.n_users)
        defended, _ = robust_fit(MODELS[name](seed), poisoned, detector, valid=valid)
        dfd = attack_effect(clean, defended, split, targets)
        row = {"seed": seed, "model": name, "attack": kind, "size": size, "detector": detector_kind,
               "fake_users": len(fake),
               "hr@10_clean": und["hr@10_before"], "hr@10_attacked": und["hr@10_after"],
               "hr@10_defended": dfd["hr@10_after"], "hr@50_clean": und["hr@50_before"],
               "hr@50_attacked": und["hr@50_after"], "hr@50_defended": dfd["hr@50_after"],
               "rank_shift": und["rank_shift"], "ndcg@10_clean": und["ndcg@10_before"],
               "ndcg@10_attacked": und["ndcg@10_after"], "ndcg@10_defended": dfd["ndcg@10_after"],
               "precision": det["precision"], "recall": det["recall"], "f1": det["f1"],
               "fit_s": fit_s, "clean_fit_s": clean_s}  # fmt: skip
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        on_row(row)


def mean_std(df: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    g = df.groupby(by, sort=False)[cols]
    m, s = g.mean(), g.std().fillna(0.0)
    cells = {c: [f"{a:.4f} ± {b:.4f}" for a, b in zip(m[c], s[c], strict=True)] for c in cols}
    return pd.DataFrame(cells, index=m.index)


def apr_paper_section(dataset: str, df: pd.DataFrame) -> str:
    cols = list(ACCURACY)
    table = mean_std(df, ["model"], cols)
    by_model = df.groupby("model", sort=False)
    table["best epoch"] = by_model["best_epoch"].mean().round(0).astype(int)
    table["s/epoch"] = by_model["s_per_epoch"].mean().round(2)
    mean = by_model[cols].mean()
    gains = []
    for base in ("BPRMF, last epoch", "BPRMF, early-stopped"):
        rel = (mean.loc["APR, best validation epoch"] / mean.loc[base] - 1) * 100
        gains.append(f"to {base}: " + ", ".join(f"{k} {v:+.1f}%" for k, v in rel.items()))
    seeds = sorted(df["seed"].unique().tolist())
    return (f"## APR in the paper's protocol ({dataset}, leave-one-out, seeds {seeds})\n\n"
            f"MF-BPR {PAPER}, APR eps {APR['eps']}, adv_reg {APR['adv_reg']}.\n\n"
            f"{markdown_table(table)}\n\nAPR relative {'; '.join(gains)}.\n")  # fmt: skip


def share_table(curves: pd.DataFrame, sep: str) -> str:
    """Markdown: share of clean NDCG@10 kept, a row per model and attack, a column per eps (mean over seeds)."""
    attacked = curves[curves["method"] != "clean"]  # the clean rows keep 1.0 by definition
    piv = attacked.pivot_table(index=["model", "method"], columns="eps", values="share", sort=False)
    piv.columns = [f"eps={c:g}" for c in piv.columns]
    piv.index = [f"{a}{sep}{b}" for a, b in piv.index]
    return markdown_table(piv, index_name=f"model{sep.rstrip() or ' /'} attack")


def write(saved: dict, out: Path, echo: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps(saved, indent=2))
    parts = [f"# Adversarial robustness on ml-1m ({datetime.now(UTC):%Y-%m-%d})\n", __doc__.split("Usage:")[0]]
    if saved.get("apr"):
        df = pd.DataFrame(saved["apr"])
        cols = list(ACCURACY)
        table = mean_std(df, ["model"], cols)
        mean = df.groupby("model")[cols].mean()
        gain = (mean.loc["APR"] / mean.loc["BPRMF"] - 1) * 100
        seeds = sorted(df["seed"].unique().tolist())
        parts.append(f"## APR vs BPR-MF (leave-one-out, seeds {seeds}, APR eps {APR['eps']}, adv_reg "
                     f"{APR['adv_reg']})\n\n{markdown_table(table)}\n\nAPR relative to BPR-MF: "
                     + ", ".join(f"{k} {v:+.1f}%" for k, v in gain.items())
                     + f"\n\nSeconds per epoch: {df.groupby('model')['s_per_epoch'].mean().round(2).to_dict()}; "
                     f"epochs: {df.groupby('model')['epochs'].mean().round(0).to_dict()}.\n")  # fmt: skip
    if saved.get("apr_paper"):
        parts += [apr_paper_section(dataset, df) for dataset, df in pd.DataFrame(saved["apr_paper"]).groupby("dataset")]
    if saved.get("apr_paper_curves"):
        df = pd.DataFrame(saved["apr_paper_curves"])
        for dataset, part in df.groupby("dataset"):
            seeds = sorted(part["seed"].unique().tolist())
            head = f"### Share of clean NDCG@10 kept under embedding attacks, paper's protocol ({dataset}"
            parts.append(f"{head}, mean over seeds {seeds})\n\n{share_table(part, sep=', ')}\n")
    if saved.get("curves"):
        df = pd.DataFrame(saved["curves"])
        curve_plot(df, out / "robustness_curves.png", title="NDCG@10 under embedding attacks (ml-1m, LOO)")
        table = share_table(df, sep=" ")
        head = "## Embedding attacks: share of clean NDCG@10 kept"
        parts.append(f"{head}\n\n{table}\n\n![curves](robustness_curves.png)\n")
    if saved.get("shilling"):
        df = pd.DataFrame(saved["shilling"])
        df["detector"] = df["detector"].fillna("classic") if "detector" in df else "classic"
        cols = ["hr@10_clean", "hr@10_attacked", "hr@10_defended", "hr@50_attacked", "hr@50_defended",
                "ndcg@10_attacked", "precision", "recall", "f1"]  # fmt: skip
        for det, part in df.groupby("detector", sort=False):
            g = part.groupby(["model", "attack", "size"], sort=False)[cols].mean()
            g.index = [f"{a} {b} {c:.0%}" for a, b, c in g.index]
            seeds = sorted(part["seed"].unique().tolist())
            parts.append(f"## Shilling attacks, {det} detector (5 targets pushed together; mean over seeds {seeds})\n\n"
                         f"{DETECTORS[det]}\n\n{markdown_table(g, index_name='model attack size')}\n")  # fmt: skip
    text = "\n".join(parts)
    atomic_write_text(out / "robustness.md", text)
    if echo:
        print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=["apr", "curves", "shilling"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--models", nargs="+", default=["EASE", "BPRMF", "MultVAE"])
    ap.add_argument("--attacks", nargs="+", default=["random", "average", "bandwagon", "popular", "segment", "gan"])
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.01, 0.03, 0.05])
    ap.add_argument("--dataset", default="ml-1m", help="dataset of the apr, apr-paper and curves jobs")
    ap.add_argument("--paper-epochs", type=int, default=1000, help="MF-BPR and APR epochs of the apr-paper job")
    ap.add_argument("--detector", choices=sorted(DETECTORS), default="classic", help="detector of the shilling job")
    ap.add_argument(
        "--cells",
        nargs="+",
        help="shilling cells MODEL:KIND:SIZE, run in this order (overrides --models/--attacks/--sizes)",
    )
    ap.add_argument("--skip-done", action="store_true", help="skip shilling cells already in the results")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    path = args.out / "robustness.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if "apr-paper" in args.only:
        rows, curves = apr_paper_job(args.seeds, args.dataset, args.paper_epochs)
        for key, new in (("apr_paper", rows), ("apr_paper_curves", curves)):
            kept = [r for r in saved.get(key, []) if r["dataset"] != args.dataset or r["seed"] not in args.seeds]
            saved[key] = kept + new
        write(saved, args.out, echo=True)
    if "apr" in args.only or "curves" in args.only:
        rows, fitted = apr_job(args.seeds if "apr" in args.only else args.seeds[:1], args.dataset)
        if "apr" in args.only:
            saved["apr"] = rows
        if "curves" in args.only:
            saved["curves"] = curves_job(*fitted[args.seeds[0]]).to_dict("records")
        write(saved, args.out, echo=True)
    if args.only == ["report"]:
        write(saved, args.out, echo=True)
    if "shilling" in args.only:
        cells = [parse_cell(c) for c in args.cells] if args.cells else [
            (m, k, z) for m in args.models for k in args.attacks for z in args.sizes]  # fmt: skip
        for seed in args.seeds:
            done = {cell_key(r) for r in saved.get("shilling", [])}
            todo = [c for c in cells if not (args.skip_done and (seed, *c, args.detector) in done)]
            print(f"seed {seed}: {len(todo)} shilling cells to run", flush=True)
            if todo:
                shilling_job(seed, todo, args.detector, lambda row: save_row(saved, row, args.out))
        write(saved, args.out, echo=True)


def parse_cell(text: str) -> Cell:
    """``MODEL:KIND:SIZE`` (e.g. ``CFGAN:average:0.03``) → a shilling cell."""
    try:
        model, kind, size = text.split(":")
        cell = (model, kind, float(size))
    except ValueError as err:
        raise SystemExit(f"--cells: {text!r} is not MODEL:KIND:SIZE") from err
    if model not in MODELS:
        raise SystemExit(f"--cells: unknown model {model!r}; choose from {sorted(MODELS)}")
    return cell


def cell_key(row: dict) -> tuple:
    return (row["seed"], row["model"], row["attack"], row["size"], row.get("detector", "classic"))


def save_row(saved: dict, row: dict, out: Path) -> None:
    """Replace any earlier row of the same cell, then rewrite the results (a stopped run keeps what it did)."""
    saved["shilling"] = [r for r in saved.get("shilling", []) if cell_key(r) != cell_key(row)] + [row]
    write(saved, out)


if __name__ == "__main__":
    np.seterr(invalid="ignore")
    main()
