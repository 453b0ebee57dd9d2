"""GAN recommenders under their published protocols: CFGAN (ML-100K, ML-1M) and IRGAN (ML-100K).

CFGAN (Chae et al., CIKM 2018): every rating is an implicit interaction; random 80/20 split per user;
every item the user has not rated in training is ranked; P@20, R@20 (hits / |test|), NDCG@20. The
original code has no validation set (its epoch count is tuned on test); here the epoch count is chosen
on a validation split (20% of each user's training items), then CFGAN is refit on the whole training set
for that many epochs. The job `cfgan-<dataset>-authors-epochs` trains instead for the epoch count of the
authors' configuration (ML-1M: 1,475–1,550, here 1,500), with no selection at all. EASE and MultVAE run
on the same split for context.

IRGAN (Wang et al., SIGIR 2017): ratings ≥ 4 are positives (as in the authors' code), random 4:1 split
per user; P@5 and NDCG@5 of IRGAN's generator against its pretrained BPR-MF starting point.

Usage: python benchmarks/gan.py [--only cfgan-ml-100k cfgan-ml-1m cfgan-ml-1m-authors-epochs irgan]
                                [--seeds 1 2 3] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from advrec.data import load_movielens
from advrec.data.splits import Split, ratio_split
from advrec.evaluation import evaluate
from advrec.models import CFGAN, EASE, IRGAN, MultVAE

RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED = {
    "ml-100k": {"precision@20": 0.294, "recall@20": 0.360, "ndcg@20": 0.433},
    "ml-1m": {"precision@20": 0.309, "recall@20": 0.272, "ndcg@20": 0.406},
}
# the authors' settings per dataset (their code): item-based ZP
CFGAN_PARAMS = {
    "ml-100k": {},
    "ml-1m": dict(g_hidden=(300,), d_hidden=(250,), lr_d=5e-5, d_reg=5e-5, batch_size=256, d_batch_size=512,
                  d_steps=1, g_steps=1, zr_ratio=0.9, pm_ratio=0.9),
}  # fmt: skip
# the authors' epoch counts: ML-100K 750–1000 generator passes at 4 an epoch; ML-1M 1475–1550
AUTHORS_EPOCHS = {"ml-100k": 250, "ml-1m": 1500}
METRICS = ("precision@20", "recall@20", "ndcg@20")


def timed_fit(model, *args, **kw):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    model.fit(*args, **kw)
    return model, time.perf_counter() - t0


def cfgan_split(name: str, seed: int) -> Split:
    """CFGAN's protocol: every rating as implicit feedback, random 80/20 per user."""
    return ratio_split(load_movielens(name), (0.8, 0.0, 0.2), random_state=seed)


def cfgan_row(name: str, seed: int, label: str, model: CFGAN, fit_s: float, metrics: dict, **extra: object) -> dict:
    """One CFGAN result row: its metrics@20, epochs, timing and mode-collapse count."""
    return {
        "dataset": name, "seed": seed, "model": label, "epochs": model.epochs, "s_per_epoch": model.epoch_seconds_,
        "fit_s": fit_s, "collapse_epochs": len(model.collapse_epochs_), **{k: metrics[k] for k in METRICS}, **extra,
    }  # fmt: skip


def cfgan_run(name: str, seed: int, max_epochs: int) -> list[dict]:
    split = cfgan_split(name, seed)
    inner = ratio_split(split.train, (0.8, 0.2, 0.0), random_state=seed)
    params = CFGAN_PARAMS[name]
    probe, probe_s = timed_fit(
        CFGAN(**params, epochs=max_epochs, eval_every=10, patience=5, random_state=seed), inner.train, valid=inner
    )
    epochs = int(probe.best_epoch_)
    model, fit_s = timed_fit(CFGAN(**params, epochs=epochs, random_state=seed), split.train)
    summary = evaluate(model, split, ks=(20,)).summary
    rows = [cfgan_row(name, seed, "CFGAN (iCFGAN-ZP)", model, fit_s, summary, selection_s=probe_s)]
    for label, other in (("EASE", EASE(l2=100.0 if name == "ml-100k" else 500.0)), ("MultVAE", MultVAE())):
        valid = inner if label == "MultVAE" else None
        fitted, secs = timed_fit(other, split.train if valid is None else inner.train, valid=valid)
        if label == "MultVAE":  # refit on all training data for the chosen number of epochs
            fitted, secs = timed_fit(MultVAE(epochs=fitted.best_epoch_, random_state=seed), split.train)
        summary = evaluate(fitted, split, ks=(20,)).summary
        rows.append({"dataset": name, "seed": seed, "model": label, "fit_s": secs, **{k: summary[k] for k in METRICS}})
    for r in rows:
        print(name, seed, r["model"], {k: round(r[k], 4) for k in METRICS}, f"fit {r['fit_s']:.0f}s", flush=True)
    return rows


def cfgan_authors_epochs_run(name: str, seed: int, curve_every: int = 50) -> list[dict]:
    """CFGAN on the whole training set for the authors' epoch count: nothing is chosen on held-out data.

    Checkpoints every `curve_every` epochs give the test metrics along the way, a diagnostic curve only; its
    last point is the reported row.
    """
    split = cfgan_split(name, seed)
    epochs = AUTHORS_EPOCHS[name]
    with tempfile.TemporaryDirectory() as ckpt:
        model, fit_s = timed_fit(
            CFGAN(**CFGAN_PARAMS[name], epochs=epochs, checkpoint_dir=ckpt, checkpoint_every=curve_every,
                  random_state=seed),
            split.train,
        )  # fmt: skip
        curve = []
        for path in sorted(Path(ckpt).glob("epoch-*")):
            epoch = int(path.name.split("-")[1])
            summary = evaluate(model if epoch == epochs else CFGAN.load(path), split, ks=(20,)).summary
            curve.append({"epoch": epoch, **{k: summary[k] for k in METRICS}})
    if not curve or curve[-1]["epoch"] != epochs:  # the last epoch is not a checkpoint
        curve.append({"epoch": epochs, **{k: evaluate(model, split, ks=(20,)).summary[k] for k in METRICS}})
    row = cfgan_row(name, seed, "CFGAN (iCFGAN-ZP, authors' epochs)", model, fit_s, curve[-1], curve=curve)
    print(name, seed, row["model"], {k: round(row[k], 4) for k in METRICS}, f"fit {fit_s:.0f}s", flush=True)
    return [row]


def plot_curves(rows: list[dict], out_dir: Path) -> list[str]:
    """One PNG per row with a curve (dataset and seed) of the test metrics along training; their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for r in (r for r in rows if r.get("curve")):
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        epochs = [c["epoch"] for c in r["curve"]]
        for metric in METRICS:
            (line,) = ax.plot(epochs, [c[metric] for c in r["curve"]], label=metric)
            ax.axhline(PUBLISHED[r["dataset"]][metric], ls="--", lw=0.8, color=line.get_color())
        ax.set(xlabel="epoch", ylabel="test (diagnostic)", title=f"{r['model']}, {r['dataset']} (dashed: published)")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"gan_{r['dataset']}_seed{r['seed']}_curve.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def irgan_run(seed: int) -> list[dict]:
    X = load_movielens("ml-100k", min_rating=4.0)
    split = ratio_split(X, (0.8, 0.0, 0.2), random_state=seed)
    inner = ratio_split(split.train, (0.8, 0.2, 0.0), random_state=seed)
    irgan = IRGAN(random_state=seed)
    rows = []
    # the pretrained generator and IRGAN: both use the validation split for early stopping, then are
    # evaluated on test with the weights of their best validation epoch
    for label, model in (("BPR-MF (IRGAN's starting point)", irgan.pretrain_model()), ("IRGAN", irgan)):
        fitted, secs = timed_fit(model, inner.train, valid=inner)
        summary = evaluate(fitted, split, ks=(3, 5, 10)).summary
        rows.append(
            {
                "dataset": "ml-100k (ratings ≥ 4)", "seed": seed, "model": label, "fit_s": secs,
                "s_per_epoch": getattr(fitted, "epoch_seconds_", None),
                **{k: summary[k] for k in ("precision@5", "ndcg@5", "precision@10", "ndcg@10")},
            }
        )  # fmt: skip
        print("irgan", seed, label, {k: round(rows[-1][k], 4) for k in ("precision@5", "ndcg@5")}, flush=True)
    return rows


def table(rows: list[dict], metrics: tuple[str, ...], published: dict | None = None) -> str:
    head = "| dataset | model | " + " | ".join(metrics) + " | epochs | s/epoch | fit s |"
    lines = [head, "|---|---|" + "---:|" * (len(metrics) + 3)]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    keys = sorted(
        dict.fromkeys((r["dataset"], r["model"]) for r in rows),
        key=lambda k: (datasets.index(k[0]), not k[1].startswith("CFGAN")),
    )  # each dataset's CFGAN rows first, then the published numbers, then the baselines
    for i, (ds, model) in enumerate(keys):
        rs = [r for r in rows if (r["dataset"], r["model"]) == (ds, model)]
        cells = [ds, model]
        for m in metrics:
            v = np.array([r[m] for r in rs])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        ep = [r["epochs"] for r in rs if r.get("epochs")]
        spe = [r["s_per_epoch"] for r in rs if r.get("s_per_epoch")]
        cells += [
            f"{np.mean(ep):.0f}" if ep else "–",
            f"{np.mean(spe):.2f}" if spe else "–",
            f"{np.mean([r['fit_s'] for r in rs]):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        last_cfgan = i + 1 == len(keys) or keys[i + 1][0] != ds or not keys[i + 1][1].startswith("CFGAN")
        if published and model.startswith("CFGAN") and last_cfgan and ds in published:
            pub = published[ds]
            lines.append(f"| {ds} | CFGAN (published) | " + " | ".join(f"{pub[m]:.3f}" for m in metrics) + " | | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=["cfgan-ml-100k", "cfgan-ml-1m", "irgan"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=400, help="most CFGAN epochs tried on validation")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    out = args.out / "gan.json"
    saved = json.loads(out.read_text()) if out.exists() else {}
    for job in args.only:
        if job.startswith("cfgan-") and job.endswith("-authors-epochs"):
            name = job.removeprefix("cfgan-").removesuffix("-authors-epochs")
            new = [r for s in args.seeds for r in cfgan_authors_epochs_run(name, s)]
        elif job.startswith("cfgan-"):
            name = job.removeprefix("cfgan-")
            new = [r for s in args.seeds for r in cfgan_run(name, s, args.epochs)]
        elif job == "irgan":
            new = [r for s in args.seeds for r in irgan_run(s)]
        else:
            raise SystemExit(f"unknown job {job!r}")
        # rows of seeds not rerun are kept, so seeds can be run in separate sessions
        saved[job] = sorted(
            [r for r in saved.get(job, []) if r["seed"] not in args.seeds] + new, key=lambda r: r["seed"]
        )
    write_report(saved, args.out)


def write_report(saved: dict[str, list[dict]], out_dir: Path) -> None:
    """gan.json (every row) and gan.md (the tables) under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gan.json").write_text(json.dumps(saved, indent=2))
    cfgan_rows = [r for k, v in saved.items() if k.startswith("cfgan-") for r in v]
    text = (
        f"# GAN recommenders ({datetime.now(UTC):%Y-%m-%d})\n\n"
        "## CFGAN, published protocol\n\nEvery rating as an implicit interaction; random 80/20 per user; all "
        "items the user has not rated in training ranked. CFGAN epochs chosen on a validation split of the "
        "training data, then refit on all of it; \"authors' epochs\": trained for the epoch count of the authors' "
        "configuration, nothing chosen. Mean ± std over seeds.\n\n"
        f"{table(cfgan_rows, METRICS, PUBLISHED)}\n\n"
        + "".join(
            f"![test metrics along training; nothing is chosen on them]({name})\n\n"
            for name in plot_curves(cfgan_rows, out_dir)
        )
        + "## IRGAN, ML-100K\n\nRatings ≥ 4 positive; random 80/20 per user; early stopping on a validation split "
        "of the training data.\n\n"
        f"{table(saved.get('irgan', []), ('precision@5', 'ndcg@5', 'precision@10', 'ndcg@10'))}\n"
    )
    print(text)
    (out_dir / "gan.md").write_text(text)


if __name__ == "__main__":
    main()
