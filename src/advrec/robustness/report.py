"""Robustness reports on a run directory: a shilling attack (with and without the detector) and the
robustness curve of an embedding model under FGSM / PGD; tables as markdown and JSON, curves as PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advrec.errors import ConfigError
from advrec.evaluation.report import markdown_table, pyplot, save_figure
from advrec.io import atomic_write_text, to_jsonable
from advrec.models.base import Recommender
from advrec.models.torch_base import TorchRecommender
from advrec.robustness.attacks import ShillingAttack, inject, pick_targets
from advrec.robustness.detect import ShillingDetector, detection_scores, robust_fit
from advrec.robustness.metrics import attack_effect
from advrec.robustness.perturb import EmbeddingModel, robustness_curve
from advrec.runs import Run, load_run


def _refit(model: Recommender, X: Any, run: Run) -> Recommender:
    fresh = model.clone()
    valid = run.split if isinstance(model, TorchRecommender) and run.split.valid is not None else None
    return fresh.fit(X, valid=valid)


def run_attack(
    run_dir: str | Path,
    kind: str,
    size: float = 0.03,
    targets: Sequence[str] | None = None,
    filler: float | None = None,
    intent: str = "push",
    defend: bool = False,
    random_state: int = 0,
    detector: str = "classic",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Poisons a run's training data, retrains its model class and measures the attack (and, with `defend`, the
    detector and the defended model). `targets` are raw item ids (default: 5 long-tail items). A "gan" attack
    samples its profiles from a MultVAE generator fitted on the training data. `detector` is "classic"
    (trained on the classic attack kinds) or "generator" (also on profiles of its own generator). Writes
    `attack.json` and `report.md` to `out` (default RUN_DIR/attacks/<kind>-<size>) and returns the result."""
    run = load_run(run_dir)
    train = run.split.train
    if targets:
        tidx = [int(i) for i in run.items.indices(list(targets))]
    else:
        tidx = [int(i) for i in pick_targets(train, 5, random_state=random_state)]
    if detector not in ("classic", "generator"):
        raise ConfigError(f"detector must be 'classic' or 'generator', not {detector!r}")
    generator = None
    if kind == "gan":
        from advrec.generative import ProfileGenerator
        from advrec.models import MultVAE

        generator = ProfileGenerator(MultVAE(random_state=random_state), prior="posterior").fit(train)
    attack = ShillingAttack(kind, tidx, size=size, filler=filler, intent=intent, generator=generator)
    poisoned, fake = inject(train, attack, random_state=random_state)
    result: dict[str, Any] = {
        "model": type(run.model).__name__, "attack": attack.describe(),
        "target_ids": [_plain(run.items.raw(i)) for i in tidx], "fake_users": len(fake),
        "undefended": attack_effect(run.model, _refit(run.model, poisoned, run), run.split, tidx),
    }  # fmt: skip
    if defend:
        det = ShillingDetector(generator="auto" if detector == "generator" else None, random_state=random_state)
        det.fit(train)
        flagged = det.detect(poisoned)
        result["detection"] = {"detector": detector, **detection_scores(flagged, fake, poisoned.n_users)}
        defended, _ = robust_fit(run.model.clone(), poisoned, det)
        result["defended"] = attack_effect(run.model, defended, run.split, tidx)
    path = Path(out) if out is not None else Path(run_dir) / "attacks" / f"{kind}-{size:g}"
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "attack.json", json.dumps(to_jsonable(result), indent=2, default=str))
    atomic_write_text(path / "report.md", attack_markdown(result))
    result["path"] = str(path)
    return result


def _plain(value: Any) -> Any:
    """A raw id as a plain Python value (numpy scalars print as np.int64(…) and are not JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def rank_shift_words(effect: dict[str, Any]) -> str:
    """ "the targets climbed 3.1 ranks on average" (or fell, for a negative shift)."""
    shift = float(effect["rank_shift"])
    return f"the targets {'climbed' if shift >= 0 else 'fell'} {abs(shift):.1f} ranks on average"


def attack_table(result: dict[str, Any]) -> pd.DataFrame:
    """Rows clean / attacked / defended; columns HR@10, HR@50, NDCG@10."""
    keys = {"hr@10": "hr@10_{}", "hr@50": "hr@50_{}", "ndcg@10": "ndcg@10_{}"}
    und = result["undefended"]
    rows = {
        "clean": {k: und[v.format("before")] for k, v in keys.items()},
        "attacked": {k: und[v.format("after")] for k, v in keys.items()},
    }
    if "defended" in result:
        rows["attacked + detector"] = {k: result["defended"][v.format("after")] for k, v in keys.items()}
    return pd.DataFrame(rows).T


def attack_markdown(result: dict[str, Any]) -> str:
    a = result["attack"]
    lines = [
        f"# {a['kind']} attack ({a['intent']}) on {result['model']}",
        "",
        f"{result['fake_users']} fake users ({a['size']:.1%} of the genuine users); targets "
        f"{', '.join(map(str, result['target_ids']))}. "
        "Target hit ratios over genuine users who had not interacted with the target; NDCG@10 on the test part.",
        "",
        markdown_table(attack_table(result), index_name="model"),
        "",
        f"Prediction shift {result['undefended']['prediction_shift']:.4f}; {rank_shift_words(result['undefended'])}.",
    ]
    if "detection" in result:
        d = result["detection"]
        lines += ["", f"Detector ({d['detector']}): precision {d['precision']:.3f}, recall {d['recall']:.3f}, "
                  f"F1 {d['f1']:.3f} ({d['flagged']} flagged, {d['fake']} fake)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def curve_plot(df: pd.DataFrame, path: str | Path, metric: str = "ndcg@10", title: str = "") -> Path:
    """`metric` against eps, one line per attack method (and model, when a `model` column is present)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    groups = df.groupby("model") if "model" in df else [("", df)]
    for name, part in groups:
        clean = part[part["method"] == "clean"]
        for method in [m for m in part["method"].unique() if m != "clean"]:
            p = pd.concat([clean, part[part["method"] == method]]).sort_values("eps")
            ax.plot(p["eps"], p[metric], marker="o", label=f"{name} {method}".strip())
    ax.set_xlabel("eps (L2 norm of each embedding's perturbation)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def run_robustness(
    run_dir: str | Path,
    eps: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    steps: int = 10,
    random_state: int = 0,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """NDCG@10 of a run's embedding model under FGSM and PGD at each eps; writes robustness.{json,md,png}."""
    run = load_run(run_dir)
    if not isinstance(run.model, EmbeddingModel):
        raise ConfigError(
            f"{type(run.model).__name__} has no embedding tables to attack; `advrec robustness` needs an embedding "
            "model such as BPRMF (use `advrec attack` for data poisoning)"
        )
    df = robustness_curve(run.model, run.split, eps=eps, steps=steps, random_state=random_state)  # type: ignore[arg-type]
    path = Path(out) if out is not None else Path(run_dir) / "robustness"
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / "robustness.json", df.to_json(orient="records", indent=2))
    name = type(run.model).__name__
    curve_plot(df, path / "robustness.png", title=f"{name} under embedding attacks")
    table = df.set_index(df["method"] + " eps=" + df["eps"].map("{:g}".format))[["ndcg@10", "recall@10", "share"]]
    text = (f"# {name} under embedding attacks\n\nPerturbations bounded per embedding row (L2 ≤ eps) that maximise "
            f"the training loss; PGD takes {steps} steps of eps/4.\n\n{markdown_table(table, index_name='attack')}\n\n"
            "![robustness](robustness.png)\n")  # fmt: skip
    atomic_write_text(path / "robustness.md", text)
    return df.assign(path=str(path))
