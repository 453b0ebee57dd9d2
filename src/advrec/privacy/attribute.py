"""Attribute inference: how well a user's sensitive attribute (ml-1m gender, age group) can be predicted from
what a recommender keeps or shows about them.

Sources: (a) user representations — MultVAE's latent mean μ(x), BPRMF's user embedding — and (b) the
recommendation list (a multi-hot vector of the top-k items). The attacker is a classifier (logistic regression
or an MLP) under stratified k-fold cross-validation over users; the report gives balanced accuracy (chance =
1 / number of classes) and ROC AUC (one-vs-rest macro average for more than two classes), out of fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.interactions import Interactions, as_csr
from advrec.errors import ConfigError, DataError
from advrec.evaluation.report import pyplot, save_figure
from advrec.models.base import Recommender
from advrec.models.torch_base import csr_to_torch, seed_of

ATTRIBUTES = ("gender", "age")
AGE_GROUPS = {1: 0, 18: 0, 25: 1, 35: 2, 45: 3, 50: 3, 56: 3}
"""ml-1m age codes → 4 groups: under 25, 25-34, 35-44, 45+ (the 7 raw buckets are too thin at the ends)."""
AGE_GROUP_NAMES = ("<25", "25-34", "35-44", "45+")


def user_attribute(X: Interactions, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels (n_users,) int, −1 where unknown, and class names, from `X.user_features` (ml-1m, ml-100k)."""
    if name not in ATTRIBUTES:
        raise ConfigError(f"attribute must be one of {', '.join(ATTRIBUTES)}, not {name!r}")
    uf = X.user_features
    if uf is None or name not in uf.columns:
        raise DataError(f"{X.name or 'the dataset'} has no user feature {name!r} (ml-1m and ml-100k have gender, age)")
    col = uf[name].reindex(np.arange(X.n_users))
    if name == "gender":
        values = col.astype(str).str.upper().to_numpy()
        labels = np.where(values == "F", 1, np.where(values == "M", 0, -1))
        return labels.astype(np.int64), ("M", "F")
    age = col.to_numpy()
    if set(np.unique(age[~np.isnan(age.astype(float))]).astype(int)) <= set(AGE_GROUPS):
        labels = np.array([AGE_GROUPS.get(int(a), -1) if a == a else -1 for a in age], dtype=np.int64)
    else:  # ml-100k: age in years
        years = age.astype(float)
        labels = np.where(np.isnan(years), -1, np.digitize(years, [25, 35, 45])).astype(np.int64)
    return labels, AGE_GROUP_NAMES


def user_representation(model: Recommender, history: Interactions | sp.spmatrix, users: np.ndarray) -> np.ndarray:
    """What the model keeps of each user: MultVAE's latent mean μ(history row), or a per-user embedding."""
    model._check_fitted()
    h = as_csr(history, "history")
    net = getattr(model, "network_", None)
    if net is not None and hasattr(net, "encode"):
        x = model._binary_rows(h, np.asarray(users))
        net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], 2048):
                mu, _ = net.encode(csr_to_torch(x[s : s + 2048], getattr(model, "device_")))  # noqa: B009
                out.append(mu.cpu().numpy())
        return np.vstack(out) if out else np.zeros((0, 0), np.float32)
    if net is not None and hasattr(net, "user"):
        return net.user.weight.detach().cpu().numpy()[np.asarray(users)]
    raise ConfigError(
        f"{type(model).__name__} keeps no user representation (it works from the history); "
        "audit its recommendation lists instead"
    )


def recommendation_features(
    model: Recommender, history: Interactions | sp.spmatrix, users: np.ndarray, k: int = 20
) -> sp.csr_matrix:
    """Multi-hot rows of each user's top-k recommended items (seen items excluded)."""
    items, _ = model.recommend(history, users, k=k)
    rows = np.repeat(np.arange(len(users)), items.shape[1])
    cols = items.ravel()
    keep = cols >= 0
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])), shape=(len(users), model.n_items_)
    )


@dataclass
class AttributeReport:
    """Out-of-fold attribute inference results."""

    attribute: str
    source: str
    balanced_accuracy: float
    auc: float
    chance: float
    fold_balanced_accuracy: list[float]
    n_users: int
    classes: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "source": self.source,
            "balanced_accuracy": self.balanced_accuracy,
            "balanced_accuracy_std": float(np.std(self.fold_balanced_accuracy)),
            "auc": self.auc,
            "chance": self.chance,
            "n_users": self.n_users,
            "classes": list(self.classes),
            **self.params,
        }


def attribute_inference(
    features: np.ndarray | sp.spmatrix,
    labels: np.ndarray,
    attribute: str = "gender",
    source: str = "representation",
    classes: tuple[str, ...] | None = None,
    classifier: str = "logreg",
    folds: int = 5,
    random_state: Any = 0,
) -> AttributeReport:
    """Balanced accuracy and AUC of predicting `labels` from `features` (users with label −1 are left out)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    keep = labels >= 0
    Xf = features[keep] if sp.issparse(features) else np.asarray(features)[keep]
    y = labels[keep]
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise DataError(f"attribute {attribute!r} has fewer than two classes among the users given")
    seed = seed_of(random_state) % (2**31)
    if classifier == "logreg":

        def build() -> Any:
            scale = StandardScaler(with_mean=not sp.issparse(Xf))
            return make_pipeline(scale, LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced"))
    elif classifier == "mlp":
        if sp.issparse(Xf):
            Xf = sp.csr_matrix(Xf).toarray()

        def build() -> Any:
            return make_pipeline(
                StandardScaler(), MLPClassifier((64,), max_iter=300, early_stopping=True, random_state=seed)
            )
    else:
        raise ConfigError(f"classifier must be 'logreg' or 'mlp', not {classifier!r}")
    proba = np.zeros((len(y), n_classes))
    fold_bacc = []
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        clf = build().fit(Xf[train_idx], y[train_idx])
        p = clf.predict_proba(Xf[test_idx])
        proba[np.ix_(test_idx, clf.classes_)] = p
        fold_bacc.append(float(balanced_accuracy_score(y[test_idx], clf.classes_[p.argmax(1)])))
    pred = proba.argmax(1)
    auc = roc_auc_score(y, proba[:, 1]) if n_classes == 2 else roc_auc_score(y, proba, multi_class="ovr")
    return AttributeReport(
        attribute=attribute,
        source=source,
        balanced_accuracy=float(balanced_accuracy_score(y, pred)),
        auc=float(auc),
        chance=1.0 / n_classes,
        fold_balanced_accuracy=fold_bacc,
        n_users=len(y),
        classes=classes or tuple(str(c) for c in np.unique(y)),
        params={"classifier": classifier, "folds": folds},
    )


def plot_attribute_reports(
    reports: list[AttributeReport], path: str | Path, title: str = "Attribute inference"
) -> Path:
    """Bar chart of balanced accuracy (± fold std) per report, with each attribute's chance level."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(reports)), 4))
    names = [f"{r.attribute}\n{r.source}" for r in reports]
    values = [r.balanced_accuracy for r in reports]
    errs = [float(np.std(r.fold_balanced_accuracy)) for r in reports]
    ax.bar(names, values, yerr=errs, capsize=3)
    for i, r in enumerate(reports):
        ax.hlines(r.chance, i - 0.4, i + 0.4, colors="k", linestyles="dashed")
    ax.set_ylabel("balanced accuracy (dashed: chance)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def audit_attributes(
    model: Recommender,
    X: Interactions,
    history: Interactions | sp.spmatrix | None = None,
    attributes: tuple[str, ...] = ATTRIBUTES,
    k: int = 20,
    folds: int = 5,
    random_state: Any = 0,
) -> list[AttributeReport]:
    """Attribute inference on every user of `X` with interactions, from the model's user representation (when it
    keeps one) and from its top-k lists."""
    h = as_csr(history if history is not None else X, "history")
    users = np.flatnonzero(np.diff(h.indptr) > 0)
    sources: dict[str, Any] = {}
    try:
        sources["representation"] = user_representation(model, h, users)
    except ConfigError:
        pass
    sources[f"top-{k} list"] = recommendation_features(model, h, users, k=k)
    reports = []
    for name in attributes:
        labels, classes = user_attribute(X, name)
        for source, F in sources.items():
            reports.append(
                attribute_inference(F, labels[users], name, source, classes, folds=folds, random_state=random_state)
            )
    return reports
