"""MovieLens loaders (ml-100k, ml-1m, ml-latest-small): ratings with timestamps, item and user tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from advrec.data.frames import DelimitedFile
from advrec.data.interactions import IdMap, Interactions
from advrec.data.registry import dataset_dir
from advrec.errors import ConfigError, UnknownDatasetError

__all__ = ["ML1M_AGES", "ML1M_OCCUPATIONS", "ML100K_GENRES", "MOVIELENS", "load_movielens"]

log = logging.getLogger(__name__)

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The 19 genre flags of ml-100k `u.item`, in column order (as in `u.genre`)."""

ML1M_AGES = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
"""ml-1m age bucket codes (`user_features["age"]`) and their meaning, from the ml-1m README."""

ML1M_OCCUPATIONS = {
    0: "other or not specified", 1: "academic/educator", 2: "artist", 3: "clerical/admin",
    4: "college/grad student", 5: "customer service", 6: "doctor/health care", 7: "executive/managerial",
    8: "farmer", 9: "homemaker", 10: "K-12 student", 11: "lawyer", 12: "programmer", 13: "retired",
    14: "sales/marketing", 15: "scientist", 16: "self-employed", 17: "technician/engineer",
    18: "tradesman/craftsman", 19: "unemployed", 20: "writer",
}  # fmt: skip
"""ml-1m occupation codes (`user_features["occupation"]`) and their meaning, from the ml-1m README."""

_RATING_COLS = ["user", "item", "rating", "time"]
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$"

Tables = tuple[pd.DataFrame, DelimitedFile, pd.DataFrame, pd.DataFrame | None]
"""(ratings with columns user, item, rating, time; their file; items indexed by raw id; users or None)."""


def _split_title(titles: pd.Series) -> pd.DataFrame:
    """Columns title (without the trailing "(1995)") and year (Int64, NA when the title has none)."""
    titles = titles.astype(str).str.strip()
    parts = titles.str.extract(_TITLE_YEAR)
    title = parts["title"].where(parts["title"].notna(), titles)
    year = pd.to_numeric(parts["year"], errors="coerce").astype("Int64")
    return pd.DataFrame({"title": title.astype(str), "year": year}, index=titles.index)


def _indexed(df: pd.DataFrame, src: DelimitedFile, key: str, what: str) -> pd.DataFrame:
    src.check_unique(df, [key], what)
    return df.set_index(key)


def _read_100k(folder: Path) -> Tables:
    ratings_src = DelimitedFile(folder / "u.data", "\t", names=_RATING_COLS)
    ratings = ratings_src.read({"user": "int", "item": "int", "rating": "float", "time": "int"})
    names = ["item", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    src = DelimitedFile(folder / "u.item", "|", names=names, encoding="latin-1", quoted=False)
    raw = src.read({"item": "int", "title": "text", **dict.fromkeys(ML100K_GENRES, "int")})
    items = _split_title(raw["title"])
    release_year = pd.to_numeric(raw["release_date"].str[-4:], errors="coerce").astype("Int64")
    items["year"] = items["year"].fillna(release_year)
    flags = raw[list(ML100K_GENRES)].to_numpy() == 1
    items["genres"] = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags]
    items.index = pd.Index(raw["item"].to_numpy())
    src.check_unique(raw, ["item"], "movie id")
    usrc = DelimitedFile(folder / "u.user", "|", names=["user", "age", "gender", "occupation", "zip"])
    users = usrc.read({"user": "int", "age": "int", "gender": "text", "occupation": "text", "zip": "text"})
    users = _indexed(users, usrc, "user", "user id")[["gender", "age", "occupation", "zip"]]
    return ratings, ratings_src, items, users


def _read_1m(folder: Path) -> Tables:
    ratings_src = DelimitedFile(folder / "ratings.dat", "::", names=_RATING_COLS, quoted=False)
    ratings = ratings_src.read({"user": "int", "item": "int", "rating": "float", "time": "int"})
    names = ["item", "title", "genres"]
    src = DelimitedFile(folder / "movies.dat", "::", names=names, encoding="latin-1", quoted=False)
    raw = src.read({"item": "int", "title": "text"})
    items = _split_title(raw["title"])
    items["genres"] = raw["genres"].fillna("").astype(str).to_numpy()
    items.index = pd.Index(raw["item"].to_numpy())
    src.check_unique(raw, ["item"], "movie id")
    usrc = DelimitedFile(folder / "users.dat", "::", names=["user", "gender", "age", "occupation", "zip"], quoted=False)
    users = usrc.read({"user": "int", "gender": "text", "age": "int", "occupation": "int", "zip": "text"})
    users = _indexed(users, usrc, "user", "user id")[["gender", "age", "occupation", "zip"]]
    return ratings, ratings_src, items, users


def _read_latest_small(folder: Path) -> Tables:
    ratings_src = DelimitedFile(folder / "ratings.csv", ",")
    ratings = ratings_src.read({"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"})
    ratings = ratings.rename(columns={"userId": "user", "movieId": "item", "timestamp": "time"})
    src = DelimitedFile(folder / "movies.csv", ",")
    raw = src.read({"movieId": "int", "title": "text"})
    items = _split_title(raw["title"])
    genres = raw["genres"].fillna("").astype(str)
    items["genres"] = genres.where(genres != "(no genres listed)", "").to_numpy()
    items.index = pd.Index(raw["movieId"].to_numpy())
    src.check_unique(raw, ["movieId"], "movie id")
    tags = DelimitedFile(folder / "tags.csv", ",").read({"movieId": "int"})
    tag = tags["tag"].fillna("").astype(str).str.strip().str.lower().str.replace("|", " ", regex=False)
    tags = pd.DataFrame({"item": tags["movieId"].to_numpy(), "tag": tag.to_numpy()})
    tags = tags[tags["tag"] != ""]
    joined = tags.groupby("item")["tag"].agg(lambda s: "|".join(sorted(set(s))))
    items["tags"] = joined.reindex(items.index).fillna("").astype(str).to_numpy()
    return ratings, ratings_src, items, None


MOVIELENS: dict[str, Callable[[Path], Tables]] = {
    "ml-100k": _read_100k,
    "ml-1m": _read_1m,
    "ml-latest-small": _read_latest_small,
}
"""Readers of the MovieLens datasets that `load_movielens` knows."""


def load_movielens(
    name: str = "ml-100k",
    data_dir: str | os.PathLike[str] | None = None,
    min_rating: float | None = None,
    core: int | None = None,
    duplicates: str = "last",
    download: bool = True,
) -> Interactions:
    """A MovieLens dataset as `Interactions` (users and items indexed in ascending raw id order).

    Only rated items are kept. `item_features` has title (without the year), year (Int64), genres
    ("Action|Comedy") and, for ml-latest-small, tags (lower-cased, unique, "|"-joined); `user_features`
    has gender, age, occupation, zip (ml-1m: age bucket and occupation codes, see `ML1M_AGES`,
    `ML1M_OCCUPATIONS`). `min_rating` keeps ratings ≥ it and sets them to 1; `core` then applies an
    iterative k-core filter (ml-1m, min_rating=3, core=10: 6,033 users, 3,123 items, 834,449 entries).
    """
    if name not in MOVIELENS:
        raise UnknownDatasetError(f"unknown MovieLens dataset {name!r}; load_movielens knows {', '.join(MOVIELENS)}")
    if duplicates not in ("last", "sum", "error"):
        raise ConfigError(f"duplicates must be 'last', 'sum' or 'error', not {duplicates!r}")
    if core is not None and core < 0:
        raise ConfigError(f"core must be ≥ 0, not {core}")
    folder = dataset_dir(name, data_dir, download=download)
    ratings, ratings_src, items, users = MOVIELENS[name](folder)
    if duplicates == "error":
        ratings_src.check_unique(ratings, ["user", "item"], "rating")
    user_ids = np.unique(ratings["user"].to_numpy())
    item_ids = np.unique(ratings["item"].to_numpy())
    X = Interactions.from_frame(
        ratings,
        user="user",
        item="item",
        rating="rating",
        time="time",
        users=IdMap(user_ids, name="user"),
        items=IdMap(item_ids, name="item"),
        duplicates=duplicates,
        name=name,
    )
    unknown = np.setdiff1d(item_ids, items.index.to_numpy())
    if len(unknown):
        log.warning("%s: %d rated items have no metadata (e.g. item %s)", name, len(unknown), unknown[0])
    X.item_features = items.reindex(item_ids).reset_index(drop=True)
    if users is not None:
        X.user_features = users.reindex(user_ids).reset_index(drop=True)
    if min_rating is not None:
        X = X.binarize(min_rating)
    if core:
        X = X.core_filter(core)
    X.meta = {"dataset": name, "min_rating": min_rating, "core": core, "duplicates": duplicates}
    return X
