"""Serving: an HTTP API over a run directory (`create_app`) and a durable event store (`open_store`).

FastAPI, uvicorn and psycopg come with the `serve` extra: `pip install 'advrec[serve]'`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advrec.serving.store import Event, EventStore, PostgresEventStore, SQLiteEventStore, StoredEvent, open_store

if TYPE_CHECKING:
    from advrec.serving.app import create_app

__all__ = [
    "Event",
    "EventStore",
    "PostgresEventStore",
    "SQLiteEventStore",
    "StoredEvent",
    "create_app",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # imports FastAPI only when asked for
        from advrec.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'advrec.serving' has no attribute {name!r}")
