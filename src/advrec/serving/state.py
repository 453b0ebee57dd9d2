"""What the routes share (`ServingState`, reached through the `State` dependency) and the helpers they use."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response

from advrec.serving.ann import AnnOptions
from advrec.serving.auth import KeyChecker
from advrec.serving.index import Histories, ServedModel
from advrec.serving.metrics import ServingMetrics
from advrec.serving.schemas import ModelStatus, check_id_text
from advrec.serving.settings import ServingSettings
from advrec.serving.store import EventStore, StoredEvent

log = logging.getLogger("advrec.serving")


def log_text(value: object, limit: int = 200) -> str:
    """User-supplied text for a log line: cut to `limit` characters, control and non-ASCII characters escaped."""
    return ascii(str(value)[:limit])


def user_digest(user_id: str) -> str:
    """A user named in logs without the raw id: the first 16 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class ServingState:
    """What the endpoints share. `model` is replaced whole on reload (one reference assignment).

    `forgotten` holds users that an admin asked to forget while their removal runs: from that moment no answer
    uses their training row or their events.
    """

    model: ServedModel
    store: EventStore
    keys: KeyChecker
    metrics: ServingMetrics
    settings: ServingSettings
    ann: AnnOptions = field(default_factory=AnnOptions)
    reload_lock: threading.Lock = field(default_factory=threading.Lock)
    forgotten: set[str] = field(default_factory=set)

    def switch(self, new: ServedModel) -> None:
        """Serves `new` from the next request on."""
        self.model = new
        self.metrics.set_model(new.version, new.model_name, new.path.name, new.loaded_at)

    def events(self, user_ids: list[str]) -> dict[str, list[StoredEvent]]:
        """The most recent stored events of each user, at most `max_events_per_user` (forgotten users have none)."""
        wanted = [u for u in user_ids if u not in self.forgotten]
        return self.store.users_events(wanted, limit=self.settings.max_events_per_user) if wanted else {}

    def user_rows(self, m: ServedModel, user_ids: list[str]) -> Histories:
        """History rows (training + stored events) of stored users; 404 naming the first that has neither."""
        train = [-1 if u in self.forgotten else m.user_index(u) for u in user_ids]
        events = self.events(user_ids)
        for uid, u in zip(user_ids, train, strict=True):
            if u < 0 and not events.get(uid):
                raise unknown_user(m, uid)
        extra, liked = [], []
        for uid in user_ids:
            evs = events.get(uid, [])
            idx, known = m.known_item_mask([e.item_id for e in evs])
            extra.append(idx)
            liked.append(m.liked_mask([e.rating for e in evs])[known])
        return m.histories(train, extra, liked)


def get_state(request: Request) -> ServingState:
    return request.app.state.serving  # type: ignore[no-any-return]


State = Annotated[ServingState, Depends(get_state)]


def unknown_user(m: ServedModel, user_id: str) -> HTTPException:
    return HTTPException(
        404,
        f"unknown user id {user_id!r}: not among the {m.n_users} users model {m.version} trained on, "
        "and no events recorded for it (POST /v1/interactions creates a user)",
    )


def id_or_422(value: str, what: str) -> str:
    try:
        return check_id_text(value, what)
    except ValueError as err:
        raise HTTPException(422, str(err)) from None


def items_out(m: ServedModel, items: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    keep = items >= 0
    return [
        {"item_id": m.item_ids[i], "title": m.titles[i], "score": s}
        for i, s in zip(items[keep].tolist(), scores[keep].tolist(), strict=True)
    ]


def json_response(payload: dict[str, Any], rows: tuple[str, list[dict[str, Any]]] | None = None) -> Response:
    """A JSON answer built from plain values (the hot paths skip re-validating their own output).

    `rows` (a key and a list) are added to `payload` one encoding call per row: a large answer then never holds
    the interpreter for long in one call, so the event loop keeps answering (/healthz) while it is built.
    """
    text = json.dumps(payload, separators=(",", ":"))
    if rows is not None:
        key, values = rows
        encoded = ",".join(json.dumps(v, separators=(",", ":")) for v in values)
        text = f"{text[:-1]}{',' if payload else ''}{json.dumps(key)}:[{encoded}]}}"
    return Response(text.encode(), media_type="application/json")


def model_status(m: ServedModel) -> ModelStatus:
    return ModelStatus(
        version=m.version,
        model=m.model_name,
        run=m.path.name,
        loaded_at=m.loaded_at,
        n_users=m.n_users,
        n_items=m.n_items,
        uses_history=m.uses_history,
        ann=m.ann.describe(),
    )
