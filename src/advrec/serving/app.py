"""The HTTP API (FastAPI): recommendations, fold-in, similar items, explanations, event ingestion, reload, forget.

`create_app(run_dir, store_url=..., api_keys=..., public_reads=False)` builds the app from the routers of
`advrec.serving.routers`; `advrec serve RUN_DIR` runs it under uvicorn (through `app_from_env`, so that
`--workers N` starts N processes with the same `ServingSettings`).

Raw ids are translated to indices here and nowhere else. A known user's history is their row of the run's
training history plus their events in the store, so new events change the next answer of history-based models
without retraining. Every call but `/healthz` and `/readyz` needs `Authorization: Bearer <key>` with a scope:
`read` (answers about stored users, the model, metrics, docs), `write` (events), `admin` (reload, forget);
with public reads, anonymous callers get ad-hoc recommendations, similar and popular items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import advrec
from advrec.errors import AdvrecError, UnknownIdError
from advrec.serving.ann import DEFAULT_EF_SEARCH, DEFAULT_M, AnnOptions
from advrec.serving.auth import KeyChecker, as_keys, load_api_keys
from advrec.serving.index import ServedModel
from advrec.serving.jsonbody import BodyLimitMiddleware, validation_error
from advrec.serving.metrics import MetricsMiddleware, ServingMetrics
from advrec.serving.routers import admin, ops, reads, writes
from advrec.serving.schemas import MAX_BATCH
from advrec.serving.settings import (
    DEFAULT_BODY_BYTES,
    ENV_NAMES,
    ENV_PREFIX,
    MAX_ENTRIES,
    MAX_EVENTS_PER_USER,
    ServingSettings,
)
from advrec.serving.state import ServingState, log, log_text
from advrec.serving.store import StoreError, open_store

# the environment variables of `advrec serve`'s workers, by setting (all in `ServingSettings.to_env`)
ENV_RUN_DIR = ENV_PREFIX + ENV_NAMES["run_dir"]
ENV_STORE = ENV_PREFIX + ENV_NAMES["store_url"]
ENV_ANN = ENV_PREFIX + ENV_NAMES["ann"]
ENV_ANN_EF_SEARCH = ENV_PREFIX + ENV_NAMES["ann_ef_search"]


def default_store_url(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'events.db'}"


def create_app(
    run_dir: str | Path,
    store_url: str | None = None,
    api_keys: Mapping[str, Iterable[str]] | Iterable[str] | None = None,
    api_key_file: str | Path | None = None,
    public_reads: bool = False,
    runs_root: str | Path | None = None,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = DEFAULT_BODY_BYTES,
    max_events_per_user: int = MAX_EVENTS_PER_USER,
    max_entries: int = MAX_ENTRIES,
    ann: str = "none",
    ann_m: int = DEFAULT_M,
    ann_ef_search: int = DEFAULT_EF_SEARCH,
) -> FastAPI:
    """The API serving the model of `run_dir`, with events in `store_url` (default: `run_dir/events.db`).

    API keys: `api_keys` if given (a mapping key -> scopes, or entries `"<key> <scope>[,<scope>...]"`), else
    `$ADVREC_API_KEYS`; plus those of `api_key_file`. Without a key every call but `/healthz` and `/readyz` is
    refused, except the public reads when `public_reads`. The other options are those of `ServingSettings`.
    """
    settings = ServingSettings(
        run_dir=Path(run_dir),
        store_url=store_url,
        api_key_file=Path(api_key_file) if api_key_file is not None else None,
        public_reads=public_reads,
        runs_root=Path(runs_root) if runs_root is not None else None,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        max_events_per_user=max_events_per_user,
        max_entries=max_entries,
        ann=ann,
        ann_m=ann_m,
        ann_ef_search=ann_ef_search,
    )
    return app_for(settings, api_keys)


def app_for(settings: ServingSettings, api_keys: Mapping[str, Iterable[str]] | Iterable[str] | None = None) -> FastAPI:
    """The API of `settings`, with `api_keys` (default: `$ADVREC_API_KEYS`) plus those of the key file."""
    ann = AnnOptions(settings.ann, m=settings.ann_m, ef_search=settings.ann_ef_search)
    keys = as_keys(api_keys) if api_keys is not None else load_api_keys(None)
    if settings.api_key_file is not None:
        for key, scopes in load_api_keys(settings.api_key_file, env=None).items():
            keys[key] = keys.get(key, frozenset()) | scopes
    model = ServedModel.from_run_dir(settings.run_dir, ann=ann)
    store_url = settings.store_url or default_store_url(settings.run_dir)
    state = ServingState(model, open_store(store_url), KeyChecker(keys), ServingMetrics(), settings, ann)
    state.switch(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if state.store.closed:  # started again after a shutdown (tests run one app several times)
            state.store = open_store(store_url)
        yield
        state.store.close()

    app = FastAPI(
        title="advrec",
        version=advrec.__version__,
        description=__doc__,
        lifespan=lifespan,
        docs_url=None,  # the docs and the schema are served by the ops router, behind a key
        redoc_url=None,
        openapi_url=None,
    )
    app.state.serving = state
    for router in (reads.router, writes.router, admin.router, ops.router):
        app.include_router(router)
    add_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # type: ignore[arg-type]
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Unknown ids are 404, a store that does not answer 503 (details in the log only), other advrec errors 422."""

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, err: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, err: StoreError) -> JSONResponse:
        log.error("event store: %s", log_text(err, 1000))
        return JSONResponse({"detail": "the event store is unavailable; try again later"}, status_code=503)

    @app.exception_handler(AdvrecError)
    async def advrec_error(request: Request, err: AdvrecError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]


def app_from_env() -> FastAPI:
    """The app as `advrec serve` configures it through the environment (one call per uvicorn worker)."""
    settings = ServingSettings.from_env()
    import torch

    # one request is one small forward pass: intra-op threads would only contend with the other requests
    torch.set_num_threads(settings.torch_threads)
    return app_for(settings)
