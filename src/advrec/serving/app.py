"""The HTTP API (FastAPI): recommendations, fold-in, similar items, explanations, event ingestion, reload.

`create_app(run_dir, store_url=..., api_keys=..., ann="none")` builds the app; `advrec serve RUN_DIR` runs it under
uvicorn (through `app_from_env`, so that `--workers N` starts N processes with the same settings).

Raw ids are translated to indices here and nowhere else. A known user's history is their row of the run's
training history plus their events in the store, so new events change the next answer of history-based models
without retraining. Writes and admin calls need `Authorization: Bearer <key>`; reads too when
`protect_reads` is set.
"""

import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

import advrec
from advrec.errors import AdvrecError, ConfigError, UnknownIdError
from advrec.serving.ann import DEFAULT_EF_SEARCH, DEFAULT_M, AnnOptions
from advrec.serving.auth import KeyChecker, load_api_keys
from advrec.serving.index import Histories, ServedModel
from advrec.serving.metrics import MetricsMiddleware, ServingMetrics
from advrec.serving.schemas import (
    MAX_BATCH,
    MAX_K,
    AdHocRequest,
    BatchRecommendations,
    Contribution,
    Explanation,
    Health,
    IngestResult,
    InteractionBatch,
    ModelStatus,
    Recommendations,
    ReloadRequest,
    SimilarItems,
    UsersRequest,
    check_id_text,
)
from advrec.serving.store import Event as StoreEvent
from advrec.serving.store import EventStore, StoredEvent, StoreError, open_store

log = logging.getLogger(__name__)

ENV_RUN_DIR = "ADVREC_SERVE_RUN_DIR"
ENV_STORE = "ADVREC_SERVE_STORE"
ENV_KEY_FILE = "ADVREC_SERVE_API_KEY_FILE"
ENV_PROTECT_READS = "ADVREC_SERVE_PROTECT_READS"
ENV_TORCH_THREADS = "ADVREC_SERVE_TORCH_THREADS"
ENV_ANN = "ADVREC_SERVE_ANN"
ENV_ANN_M = "ADVREC_SERVE_ANN_M"
ENV_ANN_EF_SEARCH = "ADVREC_SERVE_ANN_EF_SEARCH"
DEFAULT_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class ServingState:
    """What the endpoints share. `model` is replaced whole on reload (one reference assignment)."""

    model: ServedModel
    store: EventStore
    keys: KeyChecker
    metrics: ServingMetrics
    protect_reads: bool
    max_batch: int
    ann: AnnOptions = field(default_factory=AnnOptions)
    reload_lock: threading.Lock = field(default_factory=threading.Lock)


def default_store_url(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'events.db'}"


def _bad_request(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _id_or_422(value: str, what: str) -> str:
    try:
        return check_id_text(value, what)
    except ValueError as err:
        raise _bad_request(422, str(err)) from None


def create_app(
    run_dir: str | Path,
    store_url: str | None = None,
    api_keys: list[str] | None = None,
    api_key_file: str | Path | None = None,
    protect_reads: bool = False,
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = DEFAULT_BODY_BYTES,
    ann: str = "none",
    ann_m: int = DEFAULT_M,
    ann_ef_search: int = DEFAULT_EF_SEARCH,
) -> FastAPI:
    """The API serving the model of `run_dir`, with events in `store_url` (default: `run_dir/events.db`).

    API keys: `api_keys` if given, else `$ADVREC_API_KEYS`; plus those of `api_key_file`. Without any key,
    write and admin calls are refused (and reads too when `protect_reads`). `ann="faiss"` answers known users'
    top-k and similar items from an HNSW graph over the item vectors (`ann_m` links per item, `ann_ef_search`
    candidates per search); only for models whose score is ⟨user vector, item vector⟩ (BPRMF, IRGAN).
    """
    ann_options = AnnOptions(ann, m=ann_m, ef_search=ann_ef_search)
    if not 1 <= max_batch <= MAX_BATCH:
        raise ConfigError(f"max_batch must lie in 1..{MAX_BATCH}, got {max_batch}")
    keys = list(api_keys) if api_keys is not None else load_api_keys(None)
    if api_key_file is not None:
        keys += load_api_keys(api_key_file, env=None)
    model = ServedModel.from_run_dir(run_dir, ann=ann_options)
    store_url = store_url or default_store_url(run_dir)
    store = open_store(store_url)
    metrics = ServingMetrics()
    metrics.set_model(model.version, model.model_name, str(model.path), model.loaded_at)
    state = ServingState(model, store, KeyChecker(keys), metrics, protect_reads, max_batch, ann_options)

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
        max_body_size=max_body_bytes,
    )
    app.state.serving = state
    bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")

    def _check_key(creds: HTTPAuthorizationCredentials | None, what: str) -> None:
        if not state.keys:
            raise HTTPException(
                401,
                f"{what} needs an API key, and this server has none configured "
                "(start it with --api-key-file or $ADVREC_API_KEYS)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if creds is None:
            raise HTTPException(
                401,
                f"{what} needs an API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not state.keys.check(creds.credentials):
            raise HTTPException(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})

    async def require_writer(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        _check_key(creds, "writing")

    async def require_reader(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if state.protect_reads:
            _check_key(creds, "reading")

    Writer = Depends(require_writer)
    read_deps = [Depends(require_reader)] if protect_reads else []  # open reads skip the dependency
    K = Annotated[int, Query(ge=1, le=MAX_K, description="number of items")]

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, err: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, err: StoreError) -> JSONResponse:
        log.error("event store: %s", err)
        return JSONResponse({"detail": f"event store unavailable: {err}"}, status_code=503)

    @app.exception_handler(AdvrecError)
    async def advrec_error(request: Request, err: AdvrecError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    def items_out(m: ServedModel, items: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        keep = items >= 0
        return [
            {"item_id": m.item_ids[i], "title": m.titles[i], "score": s}
            for i, s in zip(items[keep].tolist(), scores[keep].tolist(), strict=True)
        ]

    def json_response(payload: dict[str, Any]) -> Response:
        """A JSON answer built from plain values (the hot paths skip re-validating their own output)."""
        return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")

    def unknown_user(m: ServedModel, user_id: str) -> HTTPException:
        return HTTPException(
            404,
            f"unknown user id {user_id!r}: not among the {m.n_users} users model {m.version} trained on, "
            "and no events recorded for it (POST /v1/interactions creates a user)",
        )

    def rows_from_events(m: ServedModel, users: list[int], events: list[list[StoredEvent]]) -> Histories:
        extra, liked = [], []
        for evs in events:
            idx, known = m.known_item_mask([e.item_id for e in evs])
            extra.append(idx)
            liked.append(m.liked_mask([e.rating for e in evs])[known])
        return m.histories(users, extra, liked)

    def user_rows(m: ServedModel, user_id: str) -> Histories:
        """The user's history row (training + stored events); 404 when neither exists."""
        u = m.user_index(user_id)
        events = state.store.user_events(user_id)
        if u < 0 and not events:
            raise unknown_user(m, user_id)
        return rows_from_events(m, [u], [events])

    # ------------------------------------------------------------------ reads
    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, dependencies=read_deps)
    async def user_recommendations(user_id: str, k: K = 10, exclude_seen: bool = True) -> Response:
        """Top-k items for a user the model trained on or one created by events (history = training + events)."""
        uid = _id_or_422(user_id, "user_id")
        m = state.model
        rows = user_rows(m, uid)
        items, scores, strategy = m.recommend(rows, k=k, exclude_seen=exclude_seen)
        return json_response(
            {
                "user_id": uid,
                "model_version": m.version,
                "strategy": strategy[0],
                "items": items_out(m, items[0], scores[0]),
            }
        )

    @app.post("/v1/users/recommendations", response_model=BatchRecommendations, dependencies=read_deps)
    async def batch_recommendations(body: UsersRequest) -> Response:
        """Top-k items for many users at once: one store query and one scoring call for the whole batch."""
        m = state.model
        uids = [str(u) for u in body.user_ids]
        train = [m.user_index(u) for u in uids]
        events = state.store.users_events(uids)
        for uid, u in zip(uids, train, strict=True):
            if u < 0 and uid not in events:
                raise unknown_user(m, uid)
        rows = rows_from_events(m, train, [events.get(uid, []) for uid in uids])
        items, scores, strategy = m.recommend(rows, k=body.k, exclude_seen=body.exclude_seen)
        results = [
            {"user_id": uid, "strategy": strategy[r], "items": items_out(m, items[r], scores[r])}
            for r, uid in enumerate(uids)
        ]
        return json_response({"model_version": m.version, "results": results})

    @app.post("/v1/recommendations", response_model=Recommendations, dependencies=read_deps)
    async def adhoc_recommendations(body: AdHocRequest) -> Response:
        """Top-k items for an ad-hoc history (anonymous or cold user).

        History-based models fold the history in (EASE, ItemKNN, MultVAE, text models); models with one vector
        per user (BPRMF, IRGAN) cannot, and fall back to popularity in the run's training data, minus the history.
        """
        m = state.model
        raws = [str(h.item_id) for h in body.history]
        try:
            idx = m.item_indices(raws, where="history")
        except UnknownIdError as err:
            raise _bad_request(422, str(err)) from None
        liked = m.liked_mask([h.rating for h in body.history])
        rows = m.histories([-1], [idx], [liked])
        items, scores, strategy = m.recommend(rows, k=body.k, exclude_seen=body.exclude_seen)
        return json_response(
            {
                "user_id": None,
                "model_version": m.version,
                "strategy": strategy[0],
                "items": items_out(m, items[0], scores[0]),
            }
        )

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarItems, dependencies=read_deps)
    async def similar_items(item_id: str, k: K = 10) -> Response:
        """Items most like this one (the model's answer to a history of only this item)."""
        iid = _id_or_422(item_id, "item_id")
        m = state.model
        i = m.item_index(iid)
        items, scores, strategy = m.similar(i, k=k)
        return json_response(
            {
                "item_id": m.item_ids[i],
                "model_version": m.version,
                "strategy": strategy,
                "items": items_out(m, items, scores),
            }
        )

    @app.get("/v1/users/{user_id}/explanations/{item_id}", response_model=Explanation, dependencies=read_deps)
    def explanation(
        user_id: str, item_id: str, n: Annotated[int, Query(ge=1, le=100, description="history items")] = 3
    ) -> Explanation:
        """Why the model scores this item for this user: the history items that add most to the score."""
        uid = _id_or_422(user_id, "user_id")
        iid = _id_or_422(item_id, "item_id")
        m = state.model
        i = m.item_index(iid)
        rows = user_rows(m, uid)
        score, why = m.explain(rows, i, n=n)
        because = [Contribution(item_id=m.item_ids[j], title=m.titles[j], contribution=c) for j, c in why]
        return Explanation(user_id=uid, item_id=m.item_ids[i], model_version=m.version, score=score, because=because)

    @app.get("/v1/model", response_model=ModelStatus, dependencies=read_deps)
    def model_status() -> ModelStatus:
        """The model being served."""
        m = state.model
        return ModelStatus(
            version=m.version,
            model=m.model_name,
            run_dir=str(m.path),
            loaded_at=m.loaded_at,
            n_users=m.n_users,
            n_items=m.n_items,
            uses_history=m.uses_history,
            ann=m.ann.describe(),
        )

    # ------------------------------------------------------------------ writes
    @app.post("/v1/interactions", response_model=IngestResult, dependencies=[Writer])
    def ingest(batch: InteractionBatch) -> IngestResult:
        """Stores a batch of events; answers once they are committed (all or none). Items must be known."""
        if len(batch.events) > state.max_batch:
            raise _bad_request(413, f"a batch holds at most {state.max_batch} events, got {len(batch.events)}")
        m = state.model
        try:
            m.item_indices([str(e.item_id) for e in batch.events], where="events")
        except UnknownIdError as err:
            raise _bad_request(422, f"{err}; no event of the batch was stored") from None
        now = time.time()
        events = [
            StoreEvent(str(e.user_id), str(e.item_id), e.rating, float(e.timestamp) if e.timestamp is not None else now)
            for e in batch.events
        ]
        result = state.store.append(events)
        state.metrics.events.inc(result.count)
        new_users = {e.user_id for e in events if m.user_index(e.user_id) < 0}
        return IngestResult(
            accepted=result.count,
            first_seq=result.first_seq,
            last_seq=result.last_seq,
            users_not_in_training=len(new_users),
        )

    @app.post("/v1/admin/reload", response_model=ModelStatus, dependencies=[Writer])
    def reload(body: ReloadRequest | None = None) -> ModelStatus:
        """Loads a run directory (default: the current one again) and switches to it in one step.

        Requests already running finish on the model they started with; a failed load keeps the old model.
        """
        target = Path(body.run_dir) if body and body.run_dir else state.model.path
        with state.reload_lock:
            try:
                new = ServedModel.from_run_dir(target, ann=state.ann)
            except Exception as err:  # any failure to load leaves the served model as it was
                log.warning("reload of %s failed: %s", target, err)
                raise _bad_request(422, f"cannot load {target}: {type(err).__name__}: {err}") from None
            state.model = new
            state.metrics.set_model(new.version, new.model_name, str(new.path), new.loaded_at)
            state.metrics.model_reloads.inc()
        log.info("serving %s from %s", new.version, new.path)
        return model_status()

    # ------------------------------------------------------------------ operations
    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    def readyz() -> Any:
        """A model is loaded and the event store answers."""
        ok = state.store.ping()
        body = Health(
            status="ready" if ok else "store unavailable", model_version=state.model.version, store=repr(state.store)
        )
        return body if ok else JSONResponse(body.model_dump(), status_code=503)

    @app.get("/metrics", response_class=Response)
    def metrics_endpoint() -> Response:
        """Prometheus text format: request counts and latency by route, ingested events, model version."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)  # type: ignore[arg-type]
    return app


def app_from_env() -> FastAPI:
    """The app as `advrec serve` configures it through the environment (one call per uvicorn worker)."""
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        raise AdvrecError(f"${ENV_RUN_DIR} must name the run directory to serve")
    import torch

    # one request is one small forward pass: intra-op threads would only contend with the other requests
    torch.set_num_threads(int(os.environ.get(ENV_TORCH_THREADS, "1")))
    return create_app(
        run_dir,
        store_url=os.environ.get(ENV_STORE) or None,
        api_key_file=os.environ.get(ENV_KEY_FILE) or None,
        protect_reads=os.environ.get(ENV_PROTECT_READS, "") == "1",
        ann=os.environ.get(ENV_ANN) or "none",
        ann_m=int(os.environ.get(ENV_ANN_M) or DEFAULT_M),
        ann_ef_search=int(os.environ.get(ENV_ANN_EF_SEARCH) or DEFAULT_EF_SEARCH),
    )
