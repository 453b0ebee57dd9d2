"""Read endpoints: recommendations, similar and popular items, explanations, the model served.

A stored user's answers need a key with the `read` scope; with public reads, anonymous callers get ad-hoc
recommendations, similar and popular items. The routes are plain functions: FastAPI runs them in its thread
pool, so scoring and store reads never hold up the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from advrec.errors import UnknownIdError
from advrec.serving.auth import require
from advrec.serving.jsonbody import StrictJSONRoute
from advrec.serving.schemas import (
    MAX_K,
    AdHocRequest,
    BatchRecommendations,
    Contribution,
    Explanation,
    ModelStatus,
    PopularItems,
    Recommendations,
    SimilarItems,
    UsersRequest,
)
from advrec.serving.state import State, id_or_422, items_out, json_response, model_status

router = APIRouter(route_class=StrictJSONRoute, tags=["reads"])
Reader = Depends(require("read"))
Public = Depends(require("read", public=True))
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of items")]


@router.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, dependencies=[Reader])
def user_recommendations(state: State, user_id: str, k: K = 10, exclude_seen: bool = True) -> Response:
    """Top-k items for a user the model trained on or one created by events (history = training + events)."""
    uid = id_or_422(user_id, "user_id")
    m = state.model
    items, scores, strategy = m.recommend(state.user_rows(m, [uid]), k=k, exclude_seen=exclude_seen)
    return json_response(
        {
            "user_id": uid,
            "model_version": m.version,
            "strategy": strategy[0],
            "items": items_out(m, items[0], scores[0]),
        }
    )


@router.post("/v1/users/recommendations", response_model=BatchRecommendations, dependencies=[Reader])
def batch_recommendations(state: State, body: UsersRequest) -> Response:
    """Top-k items for many users at once: one store query and one scoring call for the whole batch."""
    entries, most = len(body.user_ids) * body.k, state.settings.max_entries
    if entries > most:
        raise HTTPException(422, f"users × k must be at most {most}, got {len(body.user_ids)} × {body.k} = {entries}")
    m = state.model
    uids = [str(u) for u in body.user_ids]
    items, scores, strategy = m.recommend(state.user_rows(m, uids), k=body.k, exclude_seen=body.exclude_seen)
    results = [
        {"user_id": uid, "strategy": strategy[r], "items": items_out(m, items[r], scores[r])}
        for r, uid in enumerate(uids)
    ]
    return json_response({"model_version": m.version}, rows=("results", results))


@router.post("/v1/recommendations", response_model=Recommendations, dependencies=[Public])
def adhoc_recommendations(state: State, body: AdHocRequest) -> Response:
    """Top-k items for an ad-hoc history (anonymous or cold user).

    History-based models fold the history in (EASE, ItemKNN, MultVAE, text models); models with one vector
    per user (BPRMF, IRGAN) cannot, and fall back to popularity in the run's training data, minus the history.
    """
    m = state.model
    try:
        idx = m.item_indices([str(h.item_id) for h in body.history], where="history")
    except UnknownIdError as err:
        raise HTTPException(422, str(err)) from None
    rows = m.histories([-1], [idx], [m.liked_mask([h.rating for h in body.history])])
    items, scores, strategy = m.recommend(rows, k=body.k, exclude_seen=body.exclude_seen)
    return json_response(
        {
            "user_id": None,
            "model_version": m.version,
            "strategy": strategy[0],
            "items": items_out(m, items[0], scores[0]),
        }
    )


@router.get("/v1/items/popular", response_model=PopularItems, dependencies=[Public])
def popular_items(state: State, k: K = 10) -> Response:
    """The items most interacted with in the run's training data."""
    m = state.model
    items, scores = m.popular(k)
    return json_response({"model_version": m.version, "strategy": "popularity", "items": items_out(m, items, scores)})


@router.get("/v1/items/{item_id}/similar", response_model=SimilarItems, dependencies=[Public])
def similar_items(state: State, item_id: str, k: K = 10) -> Response:
    """Items most like this one (the model's answer to a history of only this item)."""
    m = state.model
    i = m.item_index(id_or_422(item_id, "item_id"))
    items, scores, strategy = m.similar(i, k=k)
    return json_response(
        {
            "item_id": m.item_ids[i],
            "model_version": m.version,
            "strategy": strategy,
            "items": items_out(m, items, scores),
        }
    )


@router.get("/v1/users/{user_id}/explanations/{item_id}", response_model=Explanation, dependencies=[Reader])
def explanation(
    state: State, user_id: str, item_id: str, n: Annotated[int, Query(ge=1, le=100, description="history items")] = 3
) -> Explanation:
    """Why the model scores this item for this user: the history items that add most to the score."""
    uid = id_or_422(user_id, "user_id")
    m = state.model
    i = m.item_index(id_or_422(item_id, "item_id"))
    score, why = m.explain(state.user_rows(m, [uid]), i, n=n)
    because = [Contribution(item_id=m.item_ids[j], title=m.titles[j], contribution=c) for j, c in why]
    return Explanation(user_id=uid, item_id=m.item_ids[i], model_version=m.version, score=score, because=because)


@router.get("/v1/model", response_model=ModelStatus, dependencies=[Reader])
def model(state: State) -> ModelStatus:
    """The model being served (the run is named by its directory's name, not its path)."""
    return model_status(state.model)
