"""Operations: liveness and readiness (open), Prometheus metrics and the API docs (behind a key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from advrec.serving.auth import require
from advrec.serving.schemas import Health
from advrec.serving.state import State

router = APIRouter(tags=["operations"])
Docs = Depends(require("read", public=True))


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (answered on the event loop, so busy worker threads do not delay it)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(state: State) -> Any:
    """A model is loaded and the event store answers; the store is named by its kind only."""
    ok = state.store.ping()
    body = Health(
        status="ready" if ok else "store unavailable", model_version=state.model.version, store=state.store.describe()
    )
    return body if ok else JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", response_class=Response, dependencies=[Depends(require("read", "admin"))])
def metrics(state: State) -> Response:
    """Prometheus text format: request counts and latency by route, ingested events, model version."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Docs])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=[Docs])
def swagger() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="advrec API")


@router.get("/redoc", include_in_schema=False, dependencies=[Docs])
def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="advrec API")
