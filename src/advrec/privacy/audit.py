"""`advrec audit`: privacy audits of a run directory (membership, attributes) or a synthetic release (DCR).

Run directory: membership inference needs users the model never saw, so the run must use `holdout_users`
(strong generalization): the test users are the non-members, the validation users are the attacker's shadow
data (half shadow members, half shadow non-members; the shadow model has the target's class and parameters);
members are as many training users, drawn at random. Attribute inference reloads the run's dataset for the
users' gender and age (ml-1m, ml-100k). Release: the real users kept out of the generator's training
(`--holdout` at synthesis) against as many training users, by DCR.
Each audit writes `report.json`, `report.md` and its plots into the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from advrec.data.datasets import IMPLICIT_DATASETS, load_dataset
from advrec.data.interactions import Interactions
from advrec.errors import ConfigError, DataError, ModelFileError
from advrec.io import atomic_write_text, to_jsonable


def _markdown(title: str, sections: dict[str, dict[str, Any] | list[dict[str, Any]]]) -> str:
    lines = [f"# {title}", ""]
    for name, body in sections.items():
        lines += [f"## {name}", ""]
        rows = body if isinstance(body, list) else [body]
        if not rows:
            continue
        keys = [k for k in rows[0] if not isinstance(rows[0][k], list | dict)]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for row in rows:
            cells = [f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _write(out: Path, title: str, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(to_jsonable(result), indent=2, default=str))
    atomic_write_text(out / "report.md", _markdown(title, {k: v for k, v in result.items() if k != "subject"}))


def _dataset_of(manifest: dict[str, Any], data_dir: str | None) -> Interactions:
    ds = manifest.get("dataset") or manifest.get("source_dataset") or {}
    name = ds.get("name")
    if not name:
        raise ModelFileError("the manifest names no dataset; attribute and DCR audits need the source data")
    min_rating = None if name in IMPLICIT_DATASETS else ds.get("min_rating")
    return load_dataset(name, data_dir=data_dir, min_rating=min_rating, core=ds.get("core"))


def audit_run(
    run_dir: str | Path,
    membership: bool = True,
    attributes: bool = True,
    query: str = "fold_in",
    out: str | Path | None = None,
    data_dir: str | None = None,
    random_state: int = 0,
) -> dict[str, Any]:
    """Membership and attribute audits of the model of a run directory; see the module docstring."""
    from advrec.privacy.attribute import audit_attributes, plot_attribute_reports
    from advrec.privacy.dp import privacy_manifest
    from advrec.privacy.membership import MembershipAttack
    from advrec.runs import load_run

    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path / "audit"
    result: dict[str, Any] = {"subject": str(run.path), "privacy": privacy_manifest(run.model)}
    if membership:
        split = run.split
        if split.protocol.get("name") != "holdout_users" or split.valid is None:
            raise ConfigError(
                f"{run.path}: membership inference needs a run on the holdout_users protocol (users the model never "
                f"saw, and validation users as shadow data); this run uses {split.protocol.get('name')!r}"
            )
        rng = np.random.default_rng(random_state)
        full = (split.history() + split.test.matrix + split.valid.matrix).tocsr()
        valid_users = np.flatnonzero(np.diff(split.valid.matrix.indptr) > 0)
        test_users = np.flatnonzero(np.diff(split.test.matrix.indptr) > 0)
        train_users = np.flatnonzero(np.diff(split.train.matrix.indptr) > 0)
        shadow = rng.permutation(valid_users)
        shadow_in, shadow_out = full[np.sort(shadow[: len(shadow) // 2])], full[np.sort(shadow[len(shadow) // 2 :])]
        shadow_model = run.model.clone().fit(shadow_in)
        attack = MembershipAttack(query=query, random_state=random_state).fit(shadow_model, shadow_in, shadow_out)
        members = np.sort(rng.choice(train_users, size=min(len(train_users), len(test_users)), replace=False))
        if not run.model.uses_history:
            raise ConfigError(f"{type(run.model).__name__} scores only its training users; audit a history-based model")
        report = attack.audit(run.model, full[members], full[test_users])
        report.plot(out / "membership.png", title=f"Membership inference, {type(run.model).__name__}")
        result["membership"] = report.as_dict()
    if attributes:
        X = _dataset_of(run.manifest, data_dir)
        if X.users != run.users:
            raise DataError(f"{run.path}: the reloaded dataset's users differ from the run's (was a user forgotten?)")
        reports = audit_attributes(run.model, X, run.split.history(), random_state=random_state)
        plot_attribute_reports(
            reports, out / "attributes.png", title=f"Attribute inference, {type(run.model).__name__}"
        )
        result["attributes"] = [r.as_dict() for r in reports]
    _write(out, f"Privacy audit of {run.path.name}", result)
    return result


def audit_release(
    release_dir: str | Path, out: str | Path | None = None, data_dir: str | None = None
) -> dict[str, Any]:
    """DCR audit of a synthetic release written with a holdout share; see the module docstring."""
    import pandas as pd

    from advrec.privacy.dcr import dcr_audit
    from advrec.privacy.synthesize import holdout_mask

    path = Path(release_dir)
    manifest = json.loads((path / "manifest.json").read_text())
    hold = manifest.get("holdout", {})
    if not hold.get("users"):
        raise ConfigError(f"{path}: the release kept no real users out of training; synthesize with --holdout 0.2")
    X = _dataset_of(manifest, data_dir)
    held = holdout_mask(X.n_users, float(hold["share"]), int(hold["seed"]))
    frame = pd.read_parquet(path / "interactions.parquet")
    users = pd.Index(frame["user"].unique())
    rows = users.get_indexer(frame["user"])
    cols = X.items.indices(frame["item"].to_numpy())
    synth = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), X.n_items))
    rng = np.random.default_rng(int(hold["seed"]) + 7)
    train_users = rng.choice(np.flatnonzero(~held), size=int(held.sum()), replace=False)
    report = dcr_audit(synth, X.matrix[np.sort(train_users)], X.matrix[held])
    out = Path(out) if out is not None else path / "audit"
    report.plot(out / "dcr.png", title=f"DCR, ε = {manifest.get('privacy', {}).get('epsilon')}")
    result = {"subject": str(path), "privacy": manifest.get("privacy", {}), "dcr": report.as_dict()}
    _write(out, f"Privacy audit of the synthetic release {path.name}", result)
    return result


def audit(target: str | Path, **kw: Any) -> dict[str, Any]:
    """Audits a run directory or a synthetic release, whichever `target` is."""
    path = Path(target)
    manifest = path / "manifest.json"
    if not manifest.exists():
        raise ModelFileError(f"{manifest} is missing: {path} is neither a run directory nor a synthetic release")
    if json.loads(manifest.read_text()).get("kind") == "synthetic interactions":
        return audit_release(path, out=kw.get("out"), data_dir=kw.get("data_dir"))
    return audit_run(path, **kw)
