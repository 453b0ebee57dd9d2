"""Request and response bodies of the HTTP API (pydantic): every input is validated at the edge."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MAX_ID_LENGTH = 256
MAX_BATCH = 10_000  # events in one POST /v1/interactions (a server may be configured lower)
MAX_HISTORY = 5_000  # items in one ad-hoc history
MAX_K = 1_000
MAX_TIMESTAMP = 1e11  # Unix seconds (year 5138): larger values are taken for milliseconds by mistake


def check_id_text(value: str | int, what: str = "id") -> str:
    """A raw id as text: 1–256 characters of encodable UTF-8, no control characters."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a string or an integer, not a boolean")
    text = str(value)
    if not 1 <= len(text) <= MAX_ID_LENGTH:
        raise ValueError(f"{what} must have 1 to {MAX_ID_LENGTH} characters, got {len(text)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{what} must not contain control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8 text (lone surrogate)") from None
    return text


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("an id must be a string or an integer, not a boolean")
    return value


RawId = Annotated[int | str, BeforeValidator(_not_bool), AfterValidator(check_id_text)]
"""A raw user or item id as the data has it (JSON string or integer), kept as text."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Event(_Strict):
    user_id: RawId = Field(description="raw user id; a user the model has not seen becomes a new user")
    item_id: RawId = Field(description="raw item id; must be an item of the served model")
    rating: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=-1e6,
        le=1e6,
        description="explicit rating; below the run's min_rating the item counts as seen but not liked",
    )
    timestamp: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=0,
        le=MAX_TIMESTAMP,
        description="Unix seconds; the server's clock when left out",
    )


class InteractionBatch(_Strict):
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


class IngestResult(BaseModel):
    accepted: int = Field(description="events committed to the store (all of the batch, or none on error)")
    first_seq: int
    last_seq: int
    users_not_in_training: int | None = Field(
        description="distinct users of the batch that the model did not train on; null unless the key may read"
    )
    replayed: bool = Field(
        default=False, description="true when the Idempotency-Key named a batch stored before: nothing was added"
    )


class HistoryItem(_Strict):
    item_id: RawId
    rating: float | None = Field(default=None, allow_inf_nan=False, ge=-1e6, le=1e6)


class AdHocRequest(_Strict):
    history: list[HistoryItem] = Field(max_length=MAX_HISTORY, description="items the user interacted with")
    k: int = Field(default=10, ge=1, le=MAX_K)
    exclude_seen: bool = True


MAX_USERS = 1_000  # users in one batch recommendation request


class UsersRequest(_Strict):
    user_ids: list[RawId] = Field(min_length=1, max_length=MAX_USERS, description="known or event-created users")
    k: int = Field(default=10, ge=1, le=MAX_K)
    exclude_seen: bool = True


class ScoredItem(BaseModel):
    item_id: int | str
    title: str | None
    score: float


Strategy = Literal["history", "fold-in", "user-vector", "popularity", "model", "co-occurrence", "item-vector"]


class Recommendations(BaseModel):
    user_id: str | None = Field(description="raw user id; null for an ad-hoc history")
    model_version: str
    strategy: Strategy = Field(
        description="history: the model scores the user's history (training + events); fold-in: an ad-hoc "
        "history; user-vector: the user's learned vector; popularity: fallback for models with one vector per "
        "user asked about a user they never saw"
    )
    items: list[ScoredItem]


class UserRecommendations(BaseModel):
    user_id: str
    strategy: Strategy
    items: list[ScoredItem]


class BatchRecommendations(BaseModel):
    model_version: str
    results: list[UserRecommendations] = Field(description="one entry per requested user, in request order")


class SimilarItems(BaseModel):
    item_id: int | str
    model_version: str
    strategy: Strategy = Field(
        description="model: the model's scores for a history of this one item; co-occurrence: cosine of "
        "training columns, for models with one vector per user; item-vector: inner product of the model's item "
        "vectors, for models with one vector per user served with approximate search"
    )
    items: list[ScoredItem]


class Contribution(BaseModel):
    item_id: int | str
    title: str | None
    contribution: float


class Explanation(BaseModel):
    user_id: str
    item_id: int | str
    model_version: str
    score: float
    because: list[Contribution] = Field(description="history items that add most to the score")


class PopularItems(BaseModel):
    model_version: str
    strategy: Strategy = Field(description="popularity: interactions per item in the run's training data")
    items: list[ScoredItem]


def _path_text(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("run_dir must not contain control characters")
    return value


class ReloadRequest(_Strict):
    run_dir: Annotated[str, AfterValidator(_path_text)] | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="a run directory under the server's runs root (a relative path is taken from the runs root); "
        "default: the one served now",
    )


class Forgotten(BaseModel):
    events_removed: int = Field(description="events of the user deleted from the event store")
    interactions_removed: int = Field(description="interactions of the user removed from the run's data")
    method: str = Field(description="how the model was updated: exact recomputation or retraining")
    model_version: str = Field(description="the model served from now on, fitted without the user")
    seconds: float


class ModelStatus(BaseModel):
    version: str
    model: str
    run: str = Field(description="the name of the run directory (not its path)")
    loaded_at: float
    n_users: int
    n_items: int
    uses_history: bool
    ann: str = Field(
        default="none",
        description="approximate search: none (every item is scored), or the index, e.g. faiss-hnsw(M=48,efSearch=64)",
    )


class Health(BaseModel):
    status: str
    model_version: str | None = None
    store: str | None = None
