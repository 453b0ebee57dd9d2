"""`advrec serve`: the HTTP service of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advrec.cli import command, console, fail
from advrec.errors import AdvrecError, ConfigError


@command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (advrec train, advrec federate)")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="server processes (each loads the model)")] = 1,
    store: Annotated[
        str | None, typer.Option(help="event store: sqlite:///path.db or postgresql://… (default RUN_DIR/events.db)")
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="API keys, one '<key> <scope>[,<scope>...]' per line, scopes among read, write, admin "
            "(also read: $ADVREC_API_KEYS, entries separated by ';')"
        ),
    ] = None,
    public_reads: Annotated[
        bool,
        typer.Option(
            help="callers without a key get ad-hoc recommendations, similar and popular items and the API docs; "
            "a stored user's answers always need the read scope"
        ),
    ] = False,
    protect_reads: Annotated[
        bool, typer.Option(hidden=True, help="removed: reads need a key with the read scope by default")
    ] = False,
    runs_root: Annotated[
        Path | None, typer.Option(help="admin reloads load only run directories under it (default: RUN_DIR's parent)")
    ] = None,
    max_events_per_user: Annotated[
        int | None, typer.Option(help="most recent events of a user that one read uses (default 10,000)")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
    ann: Annotated[
        str,
        typer.Option(
            help="approximate top-k: none (score every item) or faiss (HNSW graph over item vectors; BPRMF, IRGAN; "
            "needs the ann extra)"
        ),
    ] = "none",
    ann_m: Annotated[int, typer.Option(help="faiss HNSW links per item (memory, build time, recall)")] = 32,
    ann_ef_search: Annotated[int, typer.Option(help="faiss HNSW candidates per search (latency, recall)")] = 64,
) -> None:
    """Serves a run's model over HTTP: recommendations, fold-in, similar items, events, reload, forget.

    Every call but /healthz and /readyz needs 'Authorization: Bearer <key>' with a scope: read (stored users'
    answers, /v1/model, /metrics, /docs), write (events), admin (reload, forget; also /metrics).
    """
    import copy
    import os

    import uvicorn

    from advrec.serving.app import app_for
    from advrec.serving.settings import ServingSettings

    if protect_reads:
        fail(ConfigError("--protect-reads was removed: reads need a key with the read scope by default now"))
    try:  # load once here, so that a bad run directory, store, key file or ann option fails before the server starts
        settings = ServingSettings(
            run_dir=run_dir,
            store_url=store,
            api_key_file=api_key_file,
            public_reads=public_reads,
            runs_root=runs_root,
            ann=ann,
            ann_m=ann_m,
            ann_ef_search=ann_ef_search,
        )
        if max_events_per_user is not None:
            settings = settings.replace(max_events_per_user=max_events_per_user)
        probe = app_for(settings)
        probe.state.serving.store.close()
    except (AdvrecError, OSError) as err:
        fail(err)
    os.environ.update(settings.to_env())
    if not probe.state.serving.keys:
        console.print("[yellow]no API key configured: every call but /healthz and /readyz will be refused[/yellow]")
    console.print(f"serving {probe.state.serving.model.version} on http://{host}:{port}")
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # the server's own lines (reload, forget) too
    log_config["loggers"]["advrec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        "advrec.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level="info",
        log_config=log_config,
    )
