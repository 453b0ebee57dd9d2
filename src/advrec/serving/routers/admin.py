"""Admin endpoints (keys with the `admin` scope): reload a run directory, forget a user."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from advrec.errors import UnknownIdError
from advrec.serving.auth import require
from advrec.serving.index import ServedModel
from advrec.serving.jsonbody import StrictJSONRoute
from advrec.serving.schemas import Forgotten, ModelStatus, ReloadRequest
from advrec.serving.state import (
    ServingState,
    State,
    id_or_422,
    log,
    log_text,
    model_status,
    unknown_user,
    user_digest,
)

router = APIRouter(route_class=StrictJSONRoute, tags=["admin"], dependencies=[Depends(require("admin"))])


def run_dir_under_root(state: ServingState, text: str) -> Path:
    """`text` resolved (symlinks too) under the runs root; 403 otherwise, whether or not the path exists."""
    root = state.settings.resolved_runs_root
    path = Path(os.path.realpath(root / text))  # an absolute `text` replaces the root
    if not path.is_relative_to(root):
        log.warning("reload refused: %s is outside the runs root", log_text(text))
        raise HTTPException(403, "run_dir must lie under the server's runs root (--runs-root)")
    return path


def load_or_422(state: ServingState, path: Path, name: str) -> ServedModel:
    """The run directory loaded for serving; one message for every failure, the details in the log."""
    try:
        return ServedModel.from_run_dir(path, ann=state.ann)
    except Exception as err:  # any failure to load leaves the served model as it was
        log.warning("cannot load run %s: %s: %s", log_text(path), type(err).__name__, log_text(err, 1000))
        raise HTTPException(422, f"cannot load run {name!r}: not a valid run directory") from None


def dataset_of(m: ServedModel) -> str | None:
    """The dataset a served run was trained on (its manifest's name)."""
    dataset = m.run.manifest.get("dataset") or {}
    return dataset.get("name") if isinstance(dataset, dict) else None


@router.post("/v1/admin/reload", response_model=ModelStatus)
def reload(state: State, body: ReloadRequest | None = None) -> ModelStatus:
    """Loads a run directory (default: the current one again) and switches to it in one step.

    Requests already running finish on the model they started with; a failed load keeps the old model. A run of
    another dataset than the one served is refused (409): the stored events are of the served one.
    """
    text = body.run_dir if body and body.run_dir else None
    path = run_dir_under_root(state, text) if text else state.model.path
    with state.reload_lock:
        new = load_or_422(state, path, Path(text).name if text else path.name)
        old, now = dataset_of(state.model), dataset_of(new)
        if old != now:  # the stored events name the old dataset's users and items
            raise HTTPException(
                409,
                f"run {new.path.name!r} was trained on dataset {now!r}, but this service serves {old!r} and its "
                "stored events are of that dataset: serve the other dataset with its own service",
            )
        state.switch(new)
        state.metrics.model_reloads.inc()
    log.info("serving %s from run %s", new.version, log_text(new.path.name))
    return model_status(new)


def forget_and_reload(state: ServingState, m: ServedModel, uid: str, who: str) -> tuple[Any, ServedModel]:
    """`forget_user` on the served run and store, then the rewritten run loaded; 404 when the user is nowhere,
    500 on any other failure (the user then stays hidden in this process)."""
    from advrec.privacy import forget as forgetting  # imported on use: refitting pulls in the training stack

    try:
        result = forgetting.forget_user(m.path, uid, store=state.store)
        return result, ServedModel.from_run_dir(result.run_dir, ann=state.ann)
    except UnknownIdError:
        state.forgotten.discard(uid)
        raise unknown_user(m, uid) from None
    except Exception as err:
        log.error("forgetting user %s failed: %s: %s", who, type(err).__name__, log_text(err, 1000))
        raise HTTPException(500, "forgetting the user failed; the user stays hidden in this process") from None


@router.delete("/v1/users/{user_id}", response_model=Forgotten)
def forget(state: State, user_id: str) -> Forgotten:
    """Forgets a user: no answer uses their data from this call on; their events, training row and part in the
    model are removed from the store and the run directory, and the model refitted without them is served.

    Other server processes (`--workers N`) keep their model until restarted; the run directory records the
    forget in its manifest, without the raw id.
    """
    uid = id_or_422(user_id, "user_id")
    who = user_digest(uid)
    with state.reload_lock:
        m = state.model
        if m.user_index(uid) < 0 and not state.store.has_user(uid):
            raise unknown_user(m, uid)
        state.forgotten.add(uid)  # hidden at once, before the slow part
        log.info("forgetting user %s (run %s)", who, log_text(m.path.name))
        result, new = forget_and_reload(state, m, uid, who)
        state.switch(new)
        state.forgotten.discard(uid)  # neither the new model's data nor the store holds the user any more
    log.info(
        "forgot user %s: %d events, %d interactions removed (%s); serving %s",
        who,
        result.events_removed,
        result.interactions_removed,
        result.method,
        new.version,
    )
    return Forgotten(
        events_removed=result.events_removed,
        interactions_removed=result.interactions_removed,
        method=result.method,
        model_version=new.version,
        seconds=result.seconds,
    )
