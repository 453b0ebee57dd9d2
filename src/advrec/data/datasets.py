"""One entry point for every known dataset: `load_dataset(name)` and, where one was published, `official_split`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from advrec.data.amazon import OFFICE, SCIENTIFIC, amazon_scientific_split, load_amazon_office, load_amazon_scientific
from advrec.data.gowalla import gowalla_split, load_gowalla
from advrec.data.interactions import Interactions
from advrec.data.lastfm import NAME as LASTFM
from advrec.data.lastfm import load_lastfm
from advrec.data.movielens import MOVIELENS, load_movielens
from advrec.data.splits import Split
from advrec.errors import ConfigError, DataError, UnknownDatasetError

__all__ = [
    "IMPLICIT_DATASETS",
    "LOADERS",
    "OFFICIAL_SPLITS",
    "PUBLISHED_VALIDATION",
    "load_dataset",
    "official_split",
]

LOADERS: dict[str, Callable[..., Interactions]] = {
    **{name: partial(load_movielens, name) for name in MOVIELENS},
    "gowalla": load_gowalla,
    LASTFM: load_lastfm,
    SCIENTIFIC: load_amazon_scientific,
    OFFICE: load_amazon_office,
}
"""Loaders by dataset name; each takes `data_dir` and its own options."""

OFFICIAL_SPLITS: dict[str, Callable[..., Split]] = {"gowalla": gowalla_split, SCIENTIFIC: amazon_scientific_split}
"""Datasets published with their own train/test split, and its reader."""

PUBLISHED_VALIDATION = frozenset({SCIENTIFIC})
"""Official splits that publish their validation part too (option `validation`); the others carve it from train
(options `valid_share`, `random_state`)."""

IMPLICIT_DATASETS = frozenset({"gowalla", SCIENTIFIC, OFFICE, LASTFM})
"""Datasets without ratings (every value 1, or Last.fm's listening counts): `min_rating` does not apply to them."""

FILE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".dat", ".parquet", ".pq")
# the column names a file of interactions is read by (any case), first match wins
COLUMN_NAMES = {
    "user": ("user", "user_id", "userid", "uid", "customer_id", "visitorid"),
    "item": ("item", "item_id", "itemid", "movieid", "artistid", "product_id", "sku", "iid"),
    "rating": ("rating", "weight", "score", "count", "value"),
    "time": ("timestamp", "time", "ts", "datetime", "date"),
}


def _check_options(name: str, fn: Callable[..., Any], kw: dict[str, Any], what: str) -> dict[str, Any]:
    """`kw` less None values the function does not take; any other unknown key raises `ConfigError`."""
    params = [p for p in inspect.signature(fn).parameters if p != "data_dir"]
    for key, value in kw.items():
        if key not in params and value is not None:
            raise ConfigError(f"{what}({name!r}) has no option {key!r}; its options: {', '.join(params)}")
    return {k: v for k, v in kw.items() if k in params}


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, **kw: Any) -> Interactions:
    """A known dataset as `Interactions`: MovieLens names go to `load_movielens`, "gowalla" to `load_gowalla`,
    "amazon-scientific-unisrec" to `load_amazon_scientific`, "amazon-office-2014-5core" to `load_amazon_office`,
    "hetrec2011-lastfm-2k" to `load_lastfm`, and a path to a CSV/TSV/Parquet file to `load_file`.

    `kw` are the loader's options (e.g. `min_rating`, `core`); an option the loader does not take raises
    `ConfigError` naming it, unless its value is None.
    """
    if name not in LOADERS and is_file_dataset(str(name)):
        return load_file(name, **_check_options(name, load_file, kw, "load_dataset"))
    if name not in LOADERS:
        raise UnknownDatasetError(
            f"no loader for dataset {name!r}; loadable datasets: {', '.join(sorted(LOADERS))}, or a path to your "
            f"own file of interactions ({', '.join(FILE_SUFFIXES)})"
        )
    fn = LOADERS[name]
    return fn(data_dir=data_dir, **_check_options(name, fn, kw, "load_dataset"))


def is_file_dataset(name: str) -> bool:
    """Whether `name` names a file of interactions (a path ending in a known suffix, compressed or not)."""
    suffixes = [x.lower() for x in Path(name).suffixes if x.lower() not in (".gz", ".bz2", ".xz")]
    return bool(suffixes) and suffixes[-1] in FILE_SUFFIXES


def load_file(path: str | os.PathLike[str], min_rating: float | None = None, core: int | None = None) -> Interactions:
    """Interactions from your own CSV/TSV/Parquet file (`load_interactions`), its columns found by their header
    names (`COLUMN_NAMES`: user/user_id/…, item/item_id/…, optional rating/weight/…, timestamp/time/…). A file
    without a user or item column is refused naming its columns and the names looked for."""
    from advrec.data.frames import header_columns, load_interactions

    path = Path(path)
    columns = header_columns(path)
    lowered = {c.lower(): c for c in reversed(columns)}
    found = {role: next((lowered[n] for n in names if n in lowered), None) for role, names in COLUMN_NAMES.items()}
    for role in ("user", "item"):
        if found[role] is None:
            raise DataError(
                f"{path}: no {role} column among {columns}; name it one of {', '.join(COLUMN_NAMES[role])} "
                "(or load it in Python with load_interactions(path, user=..., item=...))"
            )
    if min_rating is not None and found["rating"] is None:
        min_rating = None  # implicit data: every row is an interaction
    return load_interactions(path, user=str(found["user"]), item=str(found["item"]), rating=found["rating"],
                             time=found["time"], min_rating=min_rating, core=core)  # fmt: skip


def official_split(name: str, data_dir: str | os.PathLike[str] | None = None, **kw: Any) -> Split:
    """The train/test split published with dataset `name` (see `gowalla_split`, `amazon_scientific_split`).

    `official_split("gowalla")` carves validation from train (share 0.1, seed 2020);
    `official_split("gowalla", valid_share=None)` keeps all of train and has `valid=None`.
    `official_split("amazon-scientific-unisrec")` is UniSRec's leave-last-out split with its own validation part;
    `validation=False` folds it into train.
    """
    if name not in OFFICIAL_SPLITS:
        raise ConfigError(
            f"dataset {name!r} has no official split; datasets with one: {', '.join(sorted(OFFICIAL_SPLITS))}"
        )
    fn = OFFICIAL_SPLITS[name]
    return fn(data_dir=data_dir, **_check_options(name, fn, kw, "official_split"))
