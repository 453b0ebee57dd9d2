"""Operations: liveness and readiness (open), Prometheus metrics and the API docs (behind a key).

The docs page is Swagger UI from the installed `swagger-ui-bundle` package, served by this service: it loads
nothing from a CDN, so it works offline and a browser fetches no third-party script with the API key's page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
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


# the files the docs page loads; only these are served (no path from the request reaches the file system)
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@router.get("/docs", include_in_schema=False, dependencies=[Docs])
def swagger() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="advrec API", swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css", swagger_favicon_url="/docs/assets/favicon-32x32.png",
    )  # fmt: skip


@router.get("/docs/assets/{name}", include_in_schema=False, dependencies=[Docs])
def docs_asset(name: str) -> FileResponse:
    from swagger_ui_bundle import swagger_ui_path

    if name not in DOCS_ASSETS:
        raise HTTPException(404, "no such file")
    return FileResponse(Path(str(swagger_ui_path)) / name, media_type=DOCS_ASSETS[name])
