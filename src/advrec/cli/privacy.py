"""Privacy: `synthesize` (DP releases), `audit` (leakage), `forget` (a user, everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advrec.cli import DataDir, command, console, fail
from advrec.errors import AdvrecError, ConfigError


# ---------------------------------------------------------------------- privacy: synthesize, audit, forget
@command()
def synthesize(
    dataset: Annotated[str, typer.Option(help="dataset name or a file of interactions")] = "ml-100k",
    generator: Annotated[
        str, typer.Option(help="vae (DP-SGD VAE), ease (DP Gram matrix) or gan (user-based CFGAN; on a DP release)")
    ] = "vae",
    epsilon: Annotated[str, typer.Option(help="privacy budget ε at the user level, or inf for no DP")] = "inf",
    users: Annotated[int | None, typer.Option(help="synthetic users to write (default: as many as real)")] = None,
    out: Annotated[Path, typer.Option(help="folder of the release")] = Path("synthetic"),
    delta: Annotated[float | None, typer.Option(help="δ (default 1/n^1.1)")] = None,
    holdout: Annotated[float, typer.Option(help="share of real users kept out of training, for the DCR audit")] = 0.0,
    epochs: Annotated[int | None, typer.Option(help="generator training epochs")] = None,
    popularity_share: Annotated[
        float, typer.Option(help="share of ε on a DP popularity prior (try 0.05 at ε ≥ 8)")
    ] = 0.0,
    sets: Annotated[list[str] | None, typer.Option("--set", help="generator parameter key=value")] = None,
    min_rating: float | None = 3.0,
    core: int | None = None,
    seed: int = 2020,
    data_dir: DataDir = None,
) -> None:
    """Writes a synthetic interaction dataset (Parquet + manifest with ε, δ) over the real item catalogue."""
    import math

    try:
        try:
            eps = math.inf if epsilon.strip().lower() in ("inf", "infinity", "none") else float(epsilon)
        except ValueError:
            raise ConfigError(f"--epsilon takes a positive number or inf, not {epsilon!r}") from None
        from advrec.data.datasets import IMPLICIT_DATASETS, load_dataset
        from advrec.experiment import parse_assignments
        from advrec.privacy.synthesize import check_generator
        from advrec.privacy.synthesize import synthesize as make_release

        check_generator(generator)
        privacy = f"ε = {eps:g} (user level)" if math.isfinite(eps) else "ε = ∞: no DP (--epsilon E for a DP release)"
        console.print(f"{generator} generator on {dataset}, {privacy}", markup=False)
        rating = None if dataset in IMPLICIT_DATASETS else min_rating
        X = load_dataset(dataset, data_dir=data_dir, min_rating=rating, core=core)
        params = parse_assignments(sets or [])
        if epochs is not None:
            params["epochs"] = epochs
        with console.status(f"training the {generator} generator (ε = {eps})"):
            release = make_release(
                X,
                generator=generator,
                epsilon=eps,
                n_users=users,
                delta=delta,
                params=params,
                holdout=holdout,
                source={"name": dataset, "min_rating": min_rating, "core": core},
                popularity_share=popularity_share,
                random_state=seed,
            )
        path = release.save(out)
    except (AdvrecError, ValueError) as err:
        fail(err)
    p = release.manifest["privacy"]
    console.print(
        f"{release.data.n_users:,} synthetic users, {release.data.nnz:,} interactions over {release.data.n_items:,} "
        f"items; ε = {p['epsilon']:.3g}, δ = {p['delta']:.3g} → {path}"
    )


@command()
def audit(
    target: Annotated[Path, typer.Argument(help="a run directory or a synthetic release folder")],
    membership: Annotated[bool, typer.Option(help="membership inference (run on holdout_users)")] = True,
    attributes: Annotated[bool, typer.Option(help="gender / age inference (ml-1m, ml-100k)")] = True,
    query: Annotated[str, typer.Option(help="fold_in | popular (what the attacker sees)")] = "fold_in",
    out: Annotated[Path | None, typer.Option(help="output folder (default TARGET/audit)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Privacy audits: membership and attribute inference on a run, DCR on a synthetic release."""
    from advrec.privacy.audit import audit as run_audit

    try:
        result = run_audit(target, membership=membership, attributes=attributes, query=query, out=out,
                           data_dir=data_dir)  # fmt: skip
    except (AdvrecError, ValueError) as err:
        fail(err)
    if "membership" in result:
        m = result["membership"]
        console.print(f"membership inference ({m['query']}): AUC {m['auc']:.3f}, accuracy {m['accuracy']:.3f}")
    for r in result.get("attributes", []):
        console.print(
            f"{r['attribute']} from {r['source']}: balanced accuracy {r['balanced_accuracy']:.3f} "
            f"(chance {r['chance']:.2f}), AUC {r['auc']:.3f}"
        )
    if "dcr" in result:
        d = result["dcr"]
        console.print(
            f"DCR: median synthetic→train {d['median_dcr_synth_to_train']:.3f}, synthetic→holdout "
            f"{d['median_dcr_synth_to_holdout']:.3f}; closer to train {d['share_closer_to_train']:.3f}; "
            f"attack AUC {d['dcr_attack_auc']:.3f}"
        )
    console.print(f"report → {(out or target / 'audit') / 'report.md'}")


@command()
def forget(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    user: Annotated[str, typer.Option(help="raw user id to forget")],
    store: Annotated[
        str | None,
        typer.Option(
            help="the event store the server writes to, when not RUN_DIR/events.db (sqlite:///… or postgresql://…)"
        ),
    ] = None,
) -> None:
    """Removes a user from a run and its event store and updates its model (exact recomputation or retraining).

    A running server keeps serving what it loaded: forget through it (DELETE /v1/users/{id}) or reload it after.
    """
    from advrec.privacy.forget import forget_user

    result = forget_user(run_dir, user, store_url=store)
    console.print(
        f"forgot user {user}: {result.interactions_removed} interactions and {result.events_removed} events removed, "
        f"model updated by {result.method} in {result.seconds:.1f}s"
    )
