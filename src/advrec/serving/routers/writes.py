"""Write endpoint: events into the store (keys with the `write` scope)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Response

from advrec.errors import UnknownIdError
from advrec.serving.auth import require
from advrec.serving.jsonbody import StrictJSONRoute
from advrec.serving.schemas import IngestResult, InteractionBatch
from advrec.serving.state import State
from advrec.serving.store import Event, IdempotencyConflict, StoreError, check_idempotency_key

router = APIRouter(route_class=StrictJSONRoute, tags=["writes"])
WriterScopes = Annotated[frozenset[str], Depends(require("write"))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="1–200 printable ASCII characters naming this batch: a retry with the same key and the same "
        "events stores nothing and answers the first result (replayed: true); other events under the key are 409",
    ),
]


def checked_key(key: str | None) -> str | None:
    if key is not None:
        try:
            check_idempotency_key(key)
        except StoreError as err:
            raise HTTPException(422, f"Idempotency-Key: {err}") from None
    return key


@router.post("/v1/interactions", response_model=IngestResult, responses={409: {"description": "key reused"}})
def ingest(
    state: State, scopes: WriterScopes, batch: InteractionBatch, response: Response, key: IdempotencyKey = None
) -> IngestResult:
    """Stores a batch of events; answers once they are committed (all or none). Items must be known.

    With an `Idempotency-Key` a client may resend a batch whose answer it never got: it is stored once.
    """
    key = checked_key(key)
    if key is not None and any(e.timestamp is None for e in batch.events):
        raise HTTPException(422, "with an Idempotency-Key every event needs a timestamp (a retry must be identical)")
    if len(batch.events) > state.settings.max_batch:
        raise HTTPException(413, f"a batch holds at most {state.settings.max_batch} events, got {len(batch.events)}")
    m = state.model
    try:
        m.item_indices([str(e.item_id) for e in batch.events], where="events")
    except UnknownIdError as err:
        raise HTTPException(422, f"{err}; no event of the batch was stored") from None
    now = time.time()
    events = [
        Event(str(e.user_id), str(e.item_id), e.rating, float(e.timestamp) if e.timestamp is not None else now)
        for e in batch.events
    ]
    try:
        result = state.store.append(events, idempotency_key=key)
    except IdempotencyConflict:
        raise HTTPException(
            409, "this Idempotency-Key was used for a different batch; send new events under a new key"
        ) from None
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        state.metrics.events.inc(result.count)
    new_users = {e.user_id for e in events if m.user_index(e.user_id) < 0} if "read" in scopes else None
    return IngestResult(
        accepted=result.count,
        first_seq=result.first_seq,
        last_seq=result.last_seq,
        users_not_in_training=None if new_users is None else len(new_users),
        replayed=result.replayed,
    )
