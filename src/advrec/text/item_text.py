"""Builders of the texts that describe items and (opt-in) users."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from advrec.data.interactions import Interactions
from advrec.errors import DataError


def _listing(value: object) -> str:
    """ "A|B|C" → "A, B, C"; missing → ""."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    return ", ".join(p.strip() for p in str(value).split("|") if p.strip())


def movie_text(features: pd.DataFrame) -> list[str]:
    """MovieLens item text: "Title (year). Genres: a, b. Tags: x, y." from title, year, genres and tags."""
    if "title" not in features:
        raise DataError(f"item features have no 'title' column; columns are {list(features.columns)}")
    out = []
    years = features["year"] if "year" in features else pd.Series(pd.NA, index=features.index)
    genres = features["genres"] if "genres" in features else pd.Series("", index=features.index)
    tags = features["tags"] if "tags" in features else pd.Series("", index=features.index)
    for title, year, g, t in zip(features["title"], years, genres, tags, strict=True):
        text = str(title).strip() or "Untitled"
        if not pd.isna(year):
            text += f" ({int(year)})"
        text += "."
        if _listing(g):
            text += f" Genres: {_listing(g)}."
        if _listing(t):
            text += f" Tags: {_listing(t)}."
        out.append(text)
    return out


def columns_text(features: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Generic text from chosen columns: "column: value. column: value." (missing values left out)."""
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise DataError(f"columns {missing} are not in the table; columns are {list(features.columns)}")
    parts = [features[c].map(lambda v, c=c: f"{c}: {_listing(v)}." if _listing(v) else "") for c in columns]
    text = pd.concat(parts, axis=1).apply(lambda row: " ".join(s for s in row if s), axis=1)
    return [t if t else "unknown" for t in text.tolist()]


def item_texts(X: Interactions, columns: Sequence[str] | None = None) -> list[str]:
    """One text per item of `X`: chosen `columns`, else the item table's ready-made `text` column as it is (the
    Amazon datasets), else the MovieLens builder (title, year, genres, tags)."""
    if X.item_features is None:
        raise DataError("these interactions carry no item features, so items have no text")
    if len(X.item_features) != X.n_items:
        raise DataError(f"item features have {len(X.item_features)} rows for {X.n_items} items")
    if columns:
        return columns_text(X.item_features, columns)
    if "text" in X.item_features.columns:
        return [str(t) if isinstance(t, str) and t.strip() else "unknown" for t in X.item_features["text"]]
    return movie_text(X.item_features)


def user_texts(X: Interactions, columns: Sequence[str]) -> list[str]:
    """One text per user from chosen profile columns. Opt-in only: there is no default set of columns."""
    if not columns:
        raise DataError("user text needs the profile columns to use, named explicitly (privacy: none by default)")
    if X.user_features is None:
        raise DataError("these interactions carry no user features")
    return columns_text(X.user_features, columns)


def encode_items(
    X: object,
    columns: Sequence[str] | None = None,
    model: str | None = None,
    device: str = "auto",
    batch_size: int = 128,
) -> tuple[np.ndarray, str]:
    """Vectors of every item's text (`item_texts`) and the identity of the encoder that made them."""
    from advrec.text.encoder import SentenceEncoder

    if not isinstance(X, Interactions):
        raise DataError("item vectors need Interactions with item features (item text), not a bare matrix")
    encoder = SentenceEncoder(model, device=device, batch_size=batch_size)
    return encoder.encode(item_texts(X, columns)), encoder.identity
