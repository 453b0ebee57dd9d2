"""Privacy and its price on ml-1m: DP-MultVAE, DP synthetic data (TSTR, DCR), membership and attribute inference,
adversarial attribute removal.

Data: ml-1m, ratings ≥ 3 as implicit feedback, 10-core (6,033 users × 3,123 items). Sections:

- `dp`: user-level DP-SGD MultVAE (Opacus, ghost clipping, RDP accountant, δ = 1/n^1.1) at ε ∈ {1, 3, 8}
  and the non-private MultVAE (ε = ∞), strong generalization: `holdout_users` with 600 validation and
  600 test users (fold-in 80% → held-out 20%), full ranking, NDCG@10 on test users; best epoch on the
  validation users (disjoint from the training users, so the selection costs the training users no budget).
- `tstr`: each of those MultVAEs is the generator of a synthetic release (standard-normal prior; profile sizes
  from a Laplace histogram with 5% of ε on top, so the release's ε is the model's plus that share): as many
  synthetic users as real training users; EASE and MultVAE trained on the synthetic data and evaluated on the
  real test users, as a ratio of the same model trained on the real training users (TSTR). DCR of each
  release against 600 training users and the 600 test users (full rows).
- `mia`: Zhang et al.'s shadow-model attack; users split into four random quarters (target in / out, shadow
  in / out); targets EASE, MultVAE, DP-MultVAE, DP-EASE and a MultVAE trained on a DP-EASE release; queries
  "popular" (the paper's serving rule: unknown users get the most popular items) and "fold_in" (everyone is
  served from half of their items); AUC on the target's members vs non-members.
- `adv`: attribute removal from MultVAE's latent code: gradient-reversal adversaries on gender and age group
  (3 heads each, weight λ), LEACE erasure of gender with a fine-tuned decoder, a decoder that reads gender;
  attribute inference (logistic regression and MLP, 5-fold stratified CV) on the latent means of all users,
  from their training or fold-in rows, and on their top-20 lists, against NDCG@10 on the test users.
- `dpease`: EASE fitted on a Gram matrix released by the Gaussian mechanism (`advrec.privacy.dp_ease`) at
  ε ∈ {1, 3, 8} and without noise, on the dp section's split; rank and l2 chosen on the validation users.
- `release`: synthetic releases of the DP-EASE generator (`private_generator(model=EASE(...))`: the Gram matrix
  by the Gaussian mechanism, 5% of ε on the profile sizes, users grown round by round from the EASE weights) at
  ε ∈ {1, 3, 8, ∞} on the dp section's split, as many users as real training users: EASE and MultVAE trained on
  each release and evaluated on the real test users, as ratios of the same models trained on the real users
  (TSTR), and DCR as in `tstr`. The MultVAE is `fit_private(MultVAE(...), method="synthetic")`, so it is also
  the DP-MultVAE of that ε (post-processing of the release). ε = 8 is repeated on the splits of two more seeds.
- `dpbpr`: BPR matrix factorization under user-level DP-SGD as a billboard model (`advrec.privacy.dp_bpr`: only
  item-side factors trained and released, each user's vector folded in from their own row) at ε ∈ {1, 3, 8}, the
  same model without DP (ε = ∞) and the non-private BPRMF. Per-user split 8:1:1 (RecBole's protocol; BPRMF keeps
  one vector per training user), full ranking, NDCG@10 on the test items. The DP models train a fixed number of
  epochs without validation (the validation items belong to the training users); the non-private ones stop
  early on validation NDCG@10.

Every figure is written with its wall time. Results: benchmarks/results/privacy.json, privacy.md, privacy.png.
Usage: python benchmarks/privacy.py [--only dp mia adv dpgrid dpbpr dpease release] [--epsilons 1 3 8]
       [--adv-methods none leace ...] [--mia-targets 'MultVAE on'] [--dp-epochs 15] [--epochs 40]
       [--dpbpr-epochs 20] [--dpbpr-clip 0.01]
       [--seed 2020]
Sections run in separate processes can be merged: each writes its own part file, `--merge` builds the report.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from advrec.data import load_movielens
from advrec.data.splits import holdout_users, ratio_split
from advrec.evaluation import evaluate
from advrec.generative import ProfileGenerator, realism
from advrec.models import BPRMF, EASE, MultVAE, Pop
from advrec.privacy.attribute import attribute_inference, user_attribute, user_representation
from advrec.privacy.dcr import dcr_audit
from advrec.privacy.dp import DPConfig, fit_private, privacy_manifest, private_size_sample, rdp_epsilon
from advrec.privacy.dp_bpr import fit_billboard
from advrec.privacy.membership import MembershipAttack, partition_users

RESULTS = Path(__file__).resolve().parent / "results"
SIZE_SHARE = 0.05

warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
warnings.filterwarnings("ignore", category=UserWarning, module="sklearn.*")


def load() -> Any:
    return load_movielens("ml-1m", min_rating=3, core=10)


def load_avg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def stamp(row: dict[str, Any], t0: float) -> dict[str, Any]:
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    row["load_avg_1min"] = load_avg()
    print(json.dumps(row, default=float), flush=True)
    return row


def vae(seed: int, epochs: int, **kw: Any) -> MultVAE:
    return MultVAE(epochs=epochs, patience=5, random_state=seed, **kw)


def dp_vae(seed: int, epochs: int, batch_size: int = 1000) -> MultVAE:
    # larger batches: the noise is divided by the expected batch size (q = 1000 / 4,833)
    return MultVAE(epochs=epochs, batch_size=batch_size, patience=epochs, random_state=seed)


def section_dp_tstr(args: argparse.Namespace) -> dict[str, Any]:
    X = load()
    split = holdout_users(X, n_valid=600, n_test=600, random_state=args.seed)
    train = split.train.matrix
    n_train = int((np.diff(train.indptr) > 0).sum())
    test_full = (split.fold_in.matrix + split.test.matrix).tocsr()[np.flatnonzero(np.diff(split.test.matrix.indptr))]
    rng = np.random.default_rng(args.seed)
    train_sample = train[np.sort(rng.choice(np.flatnonzero(np.diff(train.indptr)), 600, replace=False))]
    t0 = time.perf_counter()
    ease_real = evaluate(EASE().fit(split.train), split, ks=(10,)).summary["ndcg@10"]
    base = {"ease_real_ndcg@10": ease_real}
    dp_rows, tstr_rows = [], []
    pop = args.popularity_share
    # the variant reuses the non-private rows of the main run (same split and seed); ratios are set at merge
    for eps in ([] if pop > 0 else [math.inf]) + list(args.epsilons):
        t0 = time.perf_counter()
        if math.isinf(eps):
            model = vae(args.seed, args.epochs).fit(split.train, valid=split)
        else:
            sgd = (1 - SIZE_SHARE - pop) * eps
            config = DPConfig(epsilon=sgd, max_grad_norm=args.clip, popularity_epsilon=pop * eps)
            model = fit_private(dp_vae(args.seed, args.dp_epochs), split.train, config, valid=split)
        ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
        record = privacy_manifest(model)
        row = {"epsilon_target": eps, "ndcg@10": ndcg, "epochs_run": model.epochs_run_,
               "best_epoch": getattr(model, "best_epoch_", None), **{k: record.get(k) for k in
               ("epsilon", "delta", "noise_multiplier", "sample_rate", "dp_steps", "max_grad_norm")}}  # fmt: skip
        if record.get("private"):
            row["epsilon_opacus_recomputed"] = record["epsilon_popularity"] + rdp_epsilon(
                record["noise_multiplier"], record["sample_rate"], record["dp_steps"], record["delta"]
            )
            row["epsilon_popularity"] = record["epsilon_popularity"]
        dp_rows.append(stamp(row, t0))
        # the same model as the generator of a release
        t0 = time.perf_counter()
        gen = ProfileGenerator(model, prior="standard").fit(train)
        sizes = np.diff(train.indptr)
        if not math.isinf(eps):
            gen.sizes_ = private_size_sample(sizes[sizes > 0], X.n_items, SIZE_SHARE * eps, random_state=args.seed)
        synth = gen.sample(n_train, random_state=args.seed + 1)
        synth_ease = evaluate(EASE().fit(synth), split, ks=(10,)).summary["ndcg@10"]
        synth_vae_model = vae(args.seed, args.tstr_epochs).fit(synth, valid=split)
        synth_vae = evaluate(synth_vae_model, split, ks=(10,)).summary["ndcg@10"]
        dcr = dcr_audit(synth[:2000], train_sample, test_full).as_dict()
        release_eps = (
            math.inf if math.isinf(eps) else float(record["epsilon"]) + SIZE_SHARE * eps  # basic composition
        )
        tstr = {"epsilon_target": eps, "release_epsilon": release_eps, "ease_synth_ndcg@10": synth_ease,
                "ease_tstr_ratio": synth_ease / ease_real, "multvae_synth_ndcg@10": synth_vae,
                "multvae_tstr_ratio": synth_vae / dp_rows[0]["ndcg@10"] if pop == 0 else math.nan,
                "synthetic_users": n_train,
                "synthetic_interactions": int(synth.nnz), **dcr}  # fmt: skip
        tstr_rows.append(stamp(tstr, t0))
    if pop > 0:  # a variant: DP-SGD from a DP popularity prior
        return {"dp_pop": dp_rows, "tstr_pop": tstr_rows}
    return {"dp": dp_rows, "tstr": tstr_rows, "tstr_baseline": base}


def section_mia(args: argparse.Namespace) -> dict[str, Any]:
    from advrec.privacy.dp_ease import GRAM_L2

    X = load()
    parts = partition_users(X, random_state=args.seed)
    rows = []

    def targets() -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("EASE", lambda m: EASE().fit(m)),
                                      ("MultVAE", lambda m: vae(args.seed, args.mia_epochs).fit(m))]  # fmt: skip
        for eps in args.mia_epsilons:
            out.append((f"DP-MultVAE ε={eps:g}", lambda m, e=eps: fit_private(
                dp_vae(args.seed, args.dp_epochs, 300), m, DPConfig(epsilon=e, max_grad_norm=args.clip))))  # fmt: skip
        for eps in args.mia_epsilons:
            out.append((f"DP-EASE ε={eps:g}", lambda m, e=eps: fit_private(EASE(l2=GRAM_L2), m, epsilon=e)))
        for eps in args.mia_release_epsilons:
            out.append((f"MultVAE on a DP-EASE release ε={eps:g}", lambda m, e=eps: fit_private(
                vae(args.seed, args.mia_epochs), m, epsilon=e, method="synthetic")))  # fmt: skip
        return out

    chosen = [(n, f) for n, f in targets() if not args.mia_targets or any(n.startswith(t) for t in args.mia_targets)]
    for name, fit in chosen:
        t0 = time.perf_counter()
        target, shadow = fit(parts.target_in), fit(parts.shadow_in)
        fit_s = time.perf_counter() - t0
        for query in ("popular", "fold_in"):
            t1 = time.perf_counter()
            attack = MembershipAttack(query=query, random_state=args.seed)
            attack.fit(shadow, parts.shadow_in, parts.shadow_out)
            rep = attack.audit(target, parts.target_in, parts.target_out)
            if name == "MultVAE" and query == "popular":
                rep.plot(RESULTS / "privacy.mia.png", title="MIA on MultVAE, ml-1m (popular serving rule)")
            row = {"target": name, "query": query, "auc": rep.auc, "accuracy": rep.accuracy,
                   "shadow_train_auc": rep.shadow_auc, "fit_s": round(fit_s, 1),
                   "epsilon": privacy_manifest(target).get("epsilon")}  # fmt: skip
            rows.append(stamp(row, t1))
    return {"mia": rows, "mia_protocol": {"users_per_quarter": int(parts.target_in.shape[0]), "k": 100}}


def section_adv(args: argparse.Namespace) -> dict[str, Any]:
    """Attribute removal methods, each a recipe: `none`, `adv:λ` (gradient-reversal adversaries on gender and
    age), `leace` (gender erased from μ of the unprotected model, decoder fine-tuned), `cond+leace` (the decoder
    reads gender, then gender erased), `cond+adv:λ+leace`."""
    import copy

    from advrec.privacy.adversarial import erase_attribute, fit_adversarial
    from advrec.privacy.attribute import recommendation_features

    X = load()
    split = holdout_users(X, n_valid=600, n_test=600, random_state=args.seed)
    history = split.history()
    users = np.flatnonzero(np.diff(history.indptr) > 0)
    gender, _ = user_attribute(X, "gender")
    age, _ = user_attribute(X, "age")
    train_rows = np.diff(split.train.matrix.indptr) > 0
    labels = {"gender": np.where(train_rows, gender, -1), "age": np.where(train_rows, age, -1)}
    rows: list[dict[str, Any]] = []
    plain: MultVAE | None = None
    for method in args.adv_methods:
        t0 = time.perf_counter()
        parts = method.split("+")
        lam = next((float(p.split(":")[1]) for p in parts if p.startswith("adv:")), 0.0)
        conditioned = "cond" in parts
        if method == "leace" and plain is not None:  # erase from the unprotected model already trained
            model = copy.deepcopy(plain)
        else:
            model = vae(args.seed, args.epochs)
            if lam or conditioned:
                fit_adversarial(model, split.train, labels if lam else {"gender": labels["gender"]}, lam=lam,
                                n_heads=3, valid=split, condition=gender if conditioned else None)  # fmt: skip
            else:
                model.fit(split.train, valid=split)
            if method == "none":
                plain = copy.deepcopy(model)
        if "leace" in parts:
            erase_attribute(model, split.train, {"gender": labels["gender"]}, finetune_epochs=args.finetune_epochs,
                            valid=split)  # fmt: skip
        ndcg = evaluate(model, split, ks=(10,)).summary["ndcg@10"]
        codes = user_representation(model, history, users)
        row: dict[str, Any] = {"method": method, "lambda": lam, "ndcg@10": ndcg, "epochs_run": model.epochs_run_}
        for name, y in (("gender", gender), ("age", age)):
            rep = attribute_inference(codes, y[users], name, "latent mean", random_state=args.seed)
            row[f"{name}_bacc"] = rep.balanced_accuracy
            row[f"{name}_auc"] = rep.auc
            if name == "gender":
                mlp = attribute_inference(codes, y[users], name, "latent mean", classifier="mlp",
                                          random_state=args.seed)  # fmt: skip
                row["gender_bacc_mlp"] = mlp.balanced_accuracy
        lists = recommendation_features(model, history, users, k=20)
        row["gender_bacc_lists"] = attribute_inference(lists, gender[users], "gender", "top-20 lists",
                                                       random_state=args.seed).balanced_accuracy  # fmt: skip
        rows.append(stamp(row, t0))
    base = next((r["ndcg@10"] for r in rows if r["method"] == "none"), rows[0]["ndcg@10"])
    for r in rows:
        r["ndcg_cost"] = 1 - r["ndcg@10"] / base
    return {"adversarial": rows}


DPEASE_RANKS = [100, 200, 300]
DPEASE_L2 = [1.0, 5.0, 20.0]
ADV_METHODS = ["none", "adv:10", "adv:30", "leace", "cond+leace"]
DP_GRID = [  # (hidden, batch_size, epochs, lr): larger batches and fewer, larger steps at ε = 8
    (200, 2000, 20, 3e-3),
    (600, 2000, 20, 3e-3),
]


def section_dpgrid(args: argparse.Namespace) -> dict[str, Any]:
    X = load()
    split = holdout_users(X, n_valid=600, n_test=600, random_state=args.seed)
    rows = []
    for hidden, batch, epochs, lr in DP_GRID:
        t0 = time.perf_counter()
        model = MultVAE(hidden=hidden, batch_size=batch, epochs=epochs, lr=lr, patience=epochs, random_state=args.seed)
        fit_private(model, split.train, DPConfig(epsilon=8.0, max_grad_norm=args.clip), valid=split)
        row = {
            "hidden": hidden,
            "batch_size": batch,
            "epochs": epochs,
            "lr": lr,
            "epsilon": model.privacy_.epsilon,
            "noise_multiplier": model.privacy_.noise_multiplier,
            "dp_steps": model.privacy_.steps,
            "valid_ndcg@10": model.best_valid_,
            "ndcg@10": evaluate(model, split, ks=(10,)).summary["ndcg@10"],
        }
        rows.append(stamp(row, t0))
    return {"dp_grid": rows}


def section_dpease(args: argparse.Namespace) -> dict[str, Any]:
    """DP-EASE (`advrec.privacy.dp_ease`) on the dp section's split: (rank, l2) chosen per ε on the validation
    users (disjoint from the training users: no budget), beside EASE on raw and on normalised rows."""
    from advrec.privacy.dp_ease import fit_gram_private, gram_noise_multiplier

    X = load()
    split = holdout_users(X, n_valid=600, n_test=600, random_state=args.seed)
    n_train = int((np.diff(split.train.matrix.indptr) > 0).sum())
    delta = 1.0 / n_train**1.1
    rows = []

    def ndcg(model: Any, on: str) -> float:
        return float(evaluate(model, split, ks=(10,), on=on).summary["ndcg@10"])

    t0 = time.perf_counter()
    raw = max((EASE(l2=l2).fit(split.train) for l2 in (200.0, 500.0, 1000.0)), key=lambda m: ndcg(m, "valid"))
    rows.append(stamp({"model": "EASE", "epsilon": math.inf, "l2": raw.l2, "valid_ndcg@10": ndcg(raw, "valid"),
                       "ndcg@10": ndcg(raw, "test")}, t0))  # fmt: skip
    for eps in [math.inf, *args.epsilons]:
        t0 = time.perf_counter()
        sigma = 0.0 if math.isinf(eps) else gram_noise_multiplier(eps, delta)
        best: dict[str, Any] = {}
        for rank in [0] if math.isinf(eps) else DPEASE_RANKS:
            for l2 in DPEASE_L2:
                model = fit_gram_private(EASE(l2=l2), split.train, sigma, gram_rank=rank, random_state=args.seed)
                valid = ndcg(model, "valid")
                if valid > best.get("valid_ndcg@10", -1.0):
                    best = {"gram_rank": rank, "l2": l2, "valid_ndcg@10": valid, "ndcg@10": ndcg(model, "test")}
        row = {"model": "DP-EASE" if sigma else "EASE, normalised rows", "epsilon": eps, "delta": delta,
               "noise_multiplier": sigma, **best}  # fmt: skip
        rows.append(stamp(row, t0))
    return {"dp_ease": rows}


def section_release(args: argparse.Namespace) -> dict[str, Any]:
    """Releases of the DP-EASE generator and the models trained on them (see the module docstring): every ε
    of `--epsilons` (and ∞) on the main seed's split, ε = 8 only on the splits of `--release-seeds`."""
    rows = release_rows(args, args.seed, [math.inf, *args.epsilons])
    for seed in args.release_seeds:
        if seed != args.seed:
            rows += release_rows(args, seed, [8.0])
    return {"release": rows}


def release_rows(args: argparse.Namespace, seed: int, epsilons: list[float]) -> list[dict[str, Any]]:
    from advrec.privacy.dp import private_generator
    from advrec.privacy.dp_ease import GRAM_L2

    X = load()
    split = holdout_users(X, n_valid=600, n_test=600, random_state=seed)
    train = split.train.matrix
    n_train = int((np.diff(train.indptr) > 0).sum())
    test_full = (split.fold_in.matrix + split.test.matrix).tocsr()[np.flatnonzero(np.diff(split.test.matrix.indptr))]
    rng = np.random.default_rng(seed)
    train_sample = train[np.sort(rng.choice(np.flatnonzero(np.diff(train.indptr)), 600, replace=False))]

    def ndcg(model: Any) -> float:
        return float(evaluate(model, split, ks=(10,)).summary["ndcg@10"])

    t0 = time.perf_counter()
    ease_real, vae_real = ndcg(EASE().fit(split.train)), ndcg(vae(seed, args.epochs).fit(split.train, valid=split))
    rows = [stamp({"seed": seed, "epsilon_target": math.inf, "data": "real", "ease_ndcg@10": ease_real,
                   "multvae_ndcg@10": vae_real}, t0)]  # fmt: skip
    for eps in epsilons:
        t0 = time.perf_counter()
        gen, budget = private_generator(train, eps, model=EASE(l2=GRAM_L2), random_state=seed)
        synth = gen.sample(n_train, random_state=seed + 1)
        release_s = time.perf_counter() - t0
        ease_synth = ndcg(EASE().fit(synth))
        # the MultVAE trains as long as the one on real data (`--epochs`, early stopping on validation users)
        if math.isinf(eps):  # the same pipeline without DP: MultVAE on the noise-free release
            model = vae(seed, args.epochs).fit(synth, valid=split)
        else:
            model = fit_private(vae(seed, args.epochs), split.train, valid=split, epsilon=eps,
                                method="synthetic")  # fmt: skip
        vae_synth = ndcg(model)
        dcr = dcr_audit(synth[:2000], train_sample, test_full).as_dict()
        real_ks = realism(train, synth).as_dict()
        row = {"seed": seed, "epsilon_target": eps, "data": "DP-EASE release", "release_epsilon": budget.epsilon,
               "multvae_best_epoch": getattr(model, "best_epoch_", None),
               "multvae_epsilon": model.privacy_.epsilon if model.privacy_ else math.inf, "delta": budget.delta,
               "noise_multiplier": getattr(gen.model, "noise_multiplier_", 0.0), "release_s": round(release_s, 1),
               "synthetic_interactions": int(synth.nnz), "ease_ndcg@10": ease_synth,
               "ease_tstr_ratio": ease_synth / ease_real, "multvae_ndcg@10": vae_synth,
               "multvae_tstr_ratio": vae_synth / vae_real, **real_ks, **dcr}  # fmt: skip
        rows.append(stamp(row, t0))
    return rows


def section_dpbpr(args: argparse.Namespace) -> dict[str, Any]:
    X = load()
    split = ratio_split(X, (0.8, 0.1, 0.1), random_state=args.seed)
    rows = []

    def dp_bpr(**kw: Any) -> BPRMF:
        return BPRMF(epochs=args.dpbpr_epochs, batch_size=args.dpbpr_batch, lr=args.dpbpr_lr, random_state=args.seed,
                     **kw)  # fmt: skip

    runs: list[tuple[str, float]] = [("Pop", math.inf), ("BPRMF", math.inf), ("DP-BPR", math.inf)]
    runs += [("DP-BPR", float(e)) for e in args.epsilons]
    for name, eps in runs:
        t0 = time.perf_counter()
        model: Any
        if name == "Pop":
            model = Pop().fit(split.train)
        elif name == "BPRMF":
            model = BPRMF(random_state=args.seed).fit(split.train, valid=split)
        elif math.isinf(eps):  # the billboard model without DP: the price of the architecture alone
            model = fit_billboard(BPRMF(epochs=args.epochs, batch_size=100, lr=1e-2, patience=5,
                                        random_state=args.seed), split.train, valid=split)  # fmt: skip
        else:
            model = fit_private(dp_bpr(), split.train, DPConfig(epsilon=eps, max_grad_norm=args.dpbpr_clip))
        record = privacy_manifest(model)
        row = {"model": name, "epsilon_target": eps, "ndcg@10": evaluate(model, split, ks=(10,)).summary["ndcg@10"],
               "epochs_run": getattr(model, "epochs_run_", None), **{k: record.get(k) for k in
               ("epsilon", "delta", "noise_multiplier", "sample_rate", "dp_steps", "max_grad_norm")}}  # fmt: skip
        if record.get("private"):
            row["epsilon_opacus_recomputed"] = rdp_epsilon(
                record["noise_multiplier"], record["sample_rate"], record["dp_steps"], record["delta"]
            )
        rows.append(stamp(row, t0))
    base = rows[1]["ndcg@10"]
    for r in rows:
        r["ndcg_vs_bprmf"] = r["ndcg@10"] / base
    return {"dp_bpr": rows}


SECTIONS = {
    "dp": section_dp_tstr,
    "mia": section_mia,
    "adv": section_adv,
    "dpgrid": section_dpgrid,
    "dpbpr": section_dpbpr,
    "dpease": section_dpease,
    "release": section_release,
}


def fmt(v: Any, col: str = "") -> str:
    if isinstance(v, float) and col in ("wall_s", "fit_s", "release_s", "load_avg_1min"):
        return f"{v:.1f}"
    if isinstance(v, float) and col == "delta":
        return f"{v:.2e}"
    if isinstance(v, float):
        return "∞" if math.isinf(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c), c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if result.get("dp"):
        eps = [r["epsilon_target"] for r in result["dp"]]
        xs = [20 if math.isinf(e) else e for e in eps]
        axes[0].plot(xs, [r["ndcg@10"] for r in result["dp"]], "o-", label="DP-MultVAE")
        if result.get("tstr"):
            axes[0].plot(xs, [r["ease_synth_ndcg@10"] for r in result["tstr"]], "s--", label="EASE, VAE release")
            axes[0].plot(
                xs, [r["multvae_synth_ndcg@10"] for r in result["tstr"]], "^--", label="MultVAE on VAE release"
            )
        main_seed = result["release"][0].get("seed") if result.get("release") else None
        release = {r["epsilon_target"]: r for r in result.get("release", [])
                   if r["data"] != "real" and r.get("seed") == main_seed}  # fmt: skip
        if release:
            axes[0].plot(xs, [release.get(e, {}).get("ease_ndcg@10", np.nan) for e in eps], "s-",
                         label="EASE on DP-EASE release")  # fmt: skip
            axes[0].plot(xs, [release.get(e, {}).get("multvae_ndcg@10", np.nan) for e in eps], "^-",
                         label="MultVAE on DP-EASE release")  # fmt: skip
        if result.get("dp_ease"):
            dp_ease = {r["epsilon"]: r["ndcg@10"] for r in result["dp_ease"] if r["model"] != "EASE"}
            axes[0].plot(xs, [dp_ease.get(e, np.nan) for e in eps], "D-", label="DP-EASE")
        if result.get("pop_ndcg@10") is not None:
            axes[0].axhline(result["pop_ndcg@10"], color="gray", ls=":", label="Pop (real data)")
        axes[0].set_xscale("log")
        axes[0].set_xticks(xs, [("∞" if math.isinf(e) else f"{e:g}") for e in eps])
        axes[0].set_xlabel("ε")
        axes[0].set_ylabel("NDCG@10 (real test users)")
        axes[0].legend(fontsize=7)
        axes[0].set_title("Privacy–utility, ml-1m")
    if result.get("mia"):
        names = sorted({r["target"] for r in result["mia"]}, key=[r["target"] for r in result["mia"]].index)
        for j, query in enumerate(("popular", "fold_in")):
            vals = [next((r["auc"] for r in result["mia"] if r["target"] == n and r["query"] == query), np.nan)
                    for n in names]  # fmt: skip
            axes[1].bar(np.arange(len(names)) + 0.4 * j, vals, width=0.4, label=query)
        axes[1].set_xticks(np.arange(len(names)) + 0.2, names, rotation=20, fontsize=8)
        axes[1].axhline(0.5, color="k", ls=":")
        axes[1].set_ylabel("MIA AUC")
        axes[1].legend()
        axes[1].set_title("Membership inference")
    if result.get("adversarial"):
        rows = result["adversarial"]
        axes[2].plot([r["ndcg@10"] for r in rows], [r["gender_bacc"] for r in rows], "o", label="logistic on μ")
        axes[2].plot([r["ndcg@10"] for r in rows], [r.get("gender_bacc_mlp") for r in rows], "x", label="MLP on μ")
        for r in rows:
            axes[2].annotate(r.get("method", f"adv:{r['lambda']:g}"), (r["ndcg@10"], r["gender_bacc"]), fontsize=7)
        axes[2].legend()
        axes[2].axhline(0.5, color="k", ls=":")
        axes[2].set_xlabel("NDCG@10")
        axes[2].set_ylabel("gender balanced accuracy (attacker on μ)")
        axes[2].set_title("Attribute removal")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def report(result: dict[str, Any]) -> str:
    out = ["# Privacy on ml-1m", "", __doc__.split("Every figure")[0].strip(), ""]
    if result.get("dp"):
        pop = result.get("pop_ndcg@10")
        out += ["## DP-MultVAE (user-level DP-SGD)", "",
                f"Popularity (Pop) on the same split: NDCG@10 {pop:.4f}." if pop is not None else "", "",
                table(result["dp"], ["epsilon_target", "epsilon", "epsilon_opacus_recomputed", "delta",
                                     "noise_multiplier", "dp_steps", "ndcg@10", "best_epoch", "wall_s",
                                     "load_avg_1min"]), ""]  # fmt: skip
    for key, title in (
        ("dp_pop", "DP-MultVAE from a DP popularity prior"),
        ("tstr_pop", "Synthetic data from DP-MultVAE with a DP popularity prior"),
    ):
        if result.get(key):
            cols = (
                [
                    "epsilon_target",
                    "epsilon",
                    "epsilon_popularity",
                    "epsilon_opacus_recomputed",
                    "noise_multiplier",
                    "dp_steps",
                    "ndcg@10",
                    "wall_s",
                    "load_avg_1min",
                ]
                if key == "dp_pop"
                else [
                    "epsilon_target",
                    "release_epsilon",
                    "ease_synth_ndcg@10",
                    "ease_tstr_ratio",
                    "multvae_synth_ndcg@10",
                    "multvae_tstr_ratio",
                    "share_closer_to_train",
                    "dcr_attack_auc",
                    "wall_s",
                ]
            )
            out += [f"### {title} (`--popularity-share`)", "", table(result[key], cols), ""]
    if result.get("dp_grid"):
        out += [
            "### DP-MultVAE at ε = 8: other batch sizes and learning rates (chosen on validation NDCG@10)",
            "",
            table(
                result["dp_grid"],
                [
                    "hidden",
                    "batch_size",
                    "epochs",
                    "lr",
                    "epsilon",
                    "noise_multiplier",
                    "dp_steps",
                    "valid_ndcg@10",
                    "ndcg@10",
                    "wall_s",
                    "load_avg_1min",
                ],
            ),
            "",
        ]
    if result.get("dp_bpr"):
        cols = ["model", "epsilon_target", "epsilon", "epsilon_opacus_recomputed", "delta", "noise_multiplier",
                "dp_steps", "max_grad_norm", "ndcg@10", "ndcg_vs_bprmf", "epochs_run", "wall_s",
                "load_avg_1min"]  # fmt: skip
        a = result.get("dpbpr_args", {})
        out += ["## DP-BPR: BPR-MF as a billboard model under user-level DP-SGD (per-user split 8:1:1)", "",
                f"DP runs: {a.get('dpbpr_epochs')} epochs, {a.get('dpbpr_batch')} users per expected batch, "
                f"Adam lr {a.get('dpbpr_lr')}, 64 factors, no validation.", "",
                table(result["dp_bpr"], cols), ""]  # fmt: skip
    if result.get("dp_ease"):
        rows = result["dp_ease"]
        ref = next((r["ndcg@10"] for r in rows if r["model"] == "EASE, normalised rows"), math.nan)
        vae_ref = result["dp"][0]["ndcg@10"] if result.get("dp") else math.nan
        for r in rows:
            r["ndcg_vs_ease_normalised"] = r["ndcg@10"] / ref
            r["ndcg_vs_multvae"] = r["ndcg@10"] / vae_ref
        cols = ["model", "epsilon", "delta", "noise_multiplier", "gram_rank", "l2", "valid_ndcg@10", "ndcg@10",
                "ndcg_vs_ease_normalised", "ndcg_vs_multvae", "wall_s", "load_avg_1min"]  # fmt: skip
        out += ["## DP-EASE: the Gaussian mechanism on the normalised item Gram matrix (dp section's split)", "",
                "One Gaussian release of Σ x̃x̃ᵀ over L2-normalised user rows (sensitivity 1), σ from Opacus's RDP "
                "accountant; its top eigen-part and l2 chosen on the validation users; `ndcg_vs_multvae` divides by "
                "the non-private MultVAE of the DP-MultVAE table.", "", table(rows, cols), ""]  # fmt: skip
    if result.get("tstr"):
        out += ["## Synthetic data: train on synthetic, test on real", "",
                f"EASE trained on the real training users: NDCG@10 {result['tstr_baseline']['ease_real_ndcg@10']:.4f}; "
                "MultVAE: the ε = ∞ row above.", "",
                table(result["tstr"], ["epsilon_target", "release_epsilon", "ease_synth_ndcg@10", "ease_tstr_ratio",
                                       "multvae_synth_ndcg@10", "multvae_tstr_ratio", "median_dcr_synth_to_train",
                                       "median_dcr_synth_to_holdout", "share_closer_to_train", "dcr_attack_auc",
                                       "wall_s"]), ""]  # fmt: skip
    if result.get("release"):
        cols = ["seed", "data", "epsilon_target", "release_epsilon", "multvae_epsilon", "noise_multiplier",
                "ease_ndcg@10", "ease_tstr_ratio", "multvae_ndcg@10", "multvae_tstr_ratio", "multvae_best_epoch",
                "size_ks", "popularity_ks",
                "share_closer_to_train", "dcr_attack_auc", "release_s", "wall_s"]  # fmt: skip
        out += ["## Synthetic releases of the DP-EASE generator, and MultVAE trained on them", "",
                "TSTR ratios divide by the same model trained on the real training users (first row). The MultVAE "
                "of a finite ε is `fit_private(MultVAE(...), method=\"synthetic\")`: a DP-MultVAE whose only "
                "access to the data is the release.", "", table(result["release"], cols), "",
                release_summary(result["release"]), ""]  # fmt: skip
    if result.get("mia"):
        cols = ["target", "epsilon", "query", "auc", "accuracy", "shadow_train_auc", "fit_s", "wall_s", "load_avg_1min"]
        out += ["## Membership inference (Zhang et al., CCS 2021)", "", table(result["mia"], cols), "",
                "Under `popular` the system serves members from the model and non-members from the popularity "
                "list, so the attack separates two serving rules and DP on the model cannot lower its AUC; "
                "`fold_in` serves everyone from the model and isolates what the model memorized.", "",
                "![MIA scores](privacy.mia.png)", ""]  # fmt: skip
    if result.get("adversarial"):
        cols = ["method", "ndcg@10", "ndcg_cost", "gender_bacc", "gender_bacc_mlp", "gender_auc", "age_bacc", "age_auc",
                "gender_bacc_lists", "epochs_run", "wall_s", "load_avg_1min"]  # fmt: skip
        out += ["## Attribute removal from MultVAE's latent code", "",
                "`none`: no protection; `adv:λ`: gradient-reversal adversaries (3 heads each on gender and age, "
                "weight λ); `leace`: gender erased from μ by LEACE, decoder fine-tuned on erased codes; `cond`: "
                "the decoder reads the user's gender, so the code need not carry it. `gender_bacc` (logistic) and "
                "`gender_bacc_mlp` attack μ; `gender_bacc_lists` attacks the top-20 lists.", "",
                table(result["adversarial"], cols), "", result.get("adv_note", ""), ""]  # fmt: skip
    out += ["![Privacy–utility](privacy.png)", "", f"Written {datetime.now(UTC).isoformat(timespec='seconds')}.", ""]
    return "\n".join(out)


def release_summary(rows: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds of the ε = 8 TSTR ratios."""
    at8 = [r for r in rows if r["data"] != "real" and r["epsilon_target"] == 8.0]
    if not at8:
        return ""
    parts = []
    for key, name in (("ease_tstr_ratio", "EASE"), ("multvae_tstr_ratio", "MultVAE (= DP-MultVAE)")):
        v = np.array([r[key] for r in at8])
        parts.append(f"{name} {v.mean():.3f} ± {v.std():.3f}")
    return f"At ε = 8 over {len(at8)} seeds ({', '.join(str(r['seed']) for r in at8)}): " + "; ".join(parts) + "."


def plain_json(value: Any) -> Any:
    """Standard JSON: ε = ∞ as the string "inf", NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS))
    parser.add_argument("--epsilons", nargs="+", type=float, default=[8.0, 3.0, 1.0])
    parser.add_argument("--mia-epsilons", nargs="+", type=float, default=[8.0, 1.0])
    parser.add_argument("--mia-release-epsilons", nargs="+", type=float, default=[8.0])
    parser.add_argument("--release-seeds", nargs="+", type=int, default=[2021, 2022], help="more splits, ε = 8 only")
    parser.add_argument("--mia-targets", nargs="+", default=[], help="rerun only targets named so (prefixes)")
    parser.add_argument("--adv-methods", nargs="+", default=ADV_METHODS, help="attribute removal recipes")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="decoder epochs after LEACE erasure")
    parser.add_argument("--epochs", type=int, default=40, help="non-private MultVAE epochs (early stopping)")
    parser.add_argument("--dp-epochs", type=int, default=15)
    parser.add_argument("--tstr-epochs", type=int, default=20)
    parser.add_argument("--mia-epochs", type=int, default=30)
    parser.add_argument(
        "--popularity-share",
        type=float,
        default=0.0,
        help="share of ε on a DP popularity prior of the decoder bias (writes dp_pop / tstr_pop)",
    )
    parser.add_argument("--clip", type=float, default=1.0, help="DP-SGD max per-user gradient norm")
    parser.add_argument("--dpbpr-epochs", type=int, default=20)
    parser.add_argument("--dpbpr-batch", type=int, default=3000, help="DP-BPR expected users per step")
    parser.add_argument("--dpbpr-lr", type=float, default=3e-2)
    parser.add_argument("--dpbpr-clip", type=float, default=0.01, help="DP-BPR max per-user gradient norm")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--merge", action="store_true", help="only merge the part files into the report")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.merge:
        for name in args.only:
            t0 = time.perf_counter()
            part = SECTIONS[name](args)
            part[f"{name}_section_wall_s"] = round(time.perf_counter() - t0, 1)
            part[f"{name}_args"] = vars(args)
            tag = f"{name}-pop" if name == "dp" and args.popularity_share > 0 else name
            old = RESULTS / f"privacy.part-{tag}.json"
            if name == "mia" and args.mia_targets and old.exists():  # keep the rows of targets not rerun
                rerun = {r["target"] for r in part["mia"]}
                part["mia"] = [r for r in json.loads(old.read_text())["mia"] if r["target"] not in rerun] + part["mia"]
            tmp = RESULTS / f".privacy.part-{tag}.json.tmp"
            tmp.write_text(json.dumps(part, indent=2, default=float))
            tmp.replace(RESULTS / f"privacy.part-{tag}.json")
    result: dict[str, Any] = {}
    for name in [*SECTIONS, "dp-pop"]:
        f = RESULTS / f"privacy.part-{name}.json"
        if f.exists():
            result.update(json.loads(f.read_text()))
    if result.get("dp") and "pop_ndcg@10" not in result:  # the popularity baseline of the dp section's split
        X = load()
        split = holdout_users(X, n_valid=600, n_test=600, random_state=args.seed)
        result["pop_ndcg@10"] = evaluate(Pop().fit(split.train), split, ks=(10,)).summary["ndcg@10"]
    if result.get("tstr_pop") and result.get("dp"):
        for row in result["tstr_pop"]:
            row["multvae_tstr_ratio"] = row["multvae_synth_ndcg@10"] / result["dp"][0]["ndcg@10"]
    tmp = RESULTS / ".privacy.json.tmp"
    tmp.write_text(json.dumps(plain_json(result), indent=2, default=float))
    tmp.replace(RESULTS / "privacy.json")
    plot(result, RESULTS / "privacy.png")
    tmp = RESULTS / ".privacy.md.tmp"
    tmp.write_text(report(result))
    tmp.replace(RESULTS / "privacy.md")


if __name__ == "__main__":
    main()
