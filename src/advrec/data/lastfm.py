"""Last.fm HetRec 2011 (`hetrec2011-lastfm-2k/`): listening counts of 1,892 users on 17,632 artists."""

from __future__ import annotations

import os

import pandas as pd

from advrec.data.frames import load_interactions
from advrec.data.interactions import Interactions
from advrec.data.registry import dataset_dir
from advrec.errors import ConfigError, DataError

NAME = "hetrec2011-lastfm-2k"


def load_lastfm(
    data_dir: str | os.PathLike[str] | None = None, core: int | None = None, verify: bool = False
) -> Interactions:
    """`user_artists.dat` as implicit feedback whose values are the listening counts (1–352,698; a model that
    reads values as confidences, such as iALS, takes them as they are; binarise with `X.binarize()` where a count
    should not weigh). 92,834 (user, artist) pairs. `item_features["title"]` is the artist's name from
    `artists.dat`. `core` applies an iterative k-core filter; `verify` checks the files' sha256."""
    if core is not None and core < 0:
        raise ConfigError(f"core must be ≥ 0, not {core}")
    folder = dataset_dir(NAME, data_dir, verify=verify)
    X = load_interactions(folder / "user_artists.dat", user="userID", item="artistID", rating="weight", sep="\t",
                          core=core)  # fmt: skip
    try:
        artists = pd.read_csv(folder / "artists.dat", sep="\t", usecols=["id", "name"], dtype={"id": str},
                              keep_default_na=False, quoting=3, encoding="utf-8")  # fmt: skip
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{folder / 'artists.dat'}: cannot read the artists' names ({err})") from None
    names = artists.set_index("id")["name"]
    X.item_features = pd.DataFrame({"title": names.reindex(X.items.ids.astype(str)).fillna("").to_numpy()})
    X.name = NAME
    X.meta = {"dataset": NAME, "min_rating": None, "core": core}
    return X
