"""Data: `Interactions` (users×items CSR + id maps + side tables) and loaders of known and custom datasets."""

from advrec.data.frames import load_interactions
from advrec.data.interactions import IdMap, Interactions
from advrec.data.movielens import load_movielens
from advrec.data.registry import list_datasets

__all__ = ["IdMap", "Interactions", "list_datasets", "load_interactions", "load_movielens"]
