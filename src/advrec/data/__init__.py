"""Data: `Interactions` (users×items CSR + id maps + side tables) and loaders of known and custom datasets."""

from advrec.data.amazon import amazon_scientific_split, load_amazon_office, load_amazon_scientific
from advrec.data.datasets import load_dataset, official_split
from advrec.data.frames import load_interactions
from advrec.data.gowalla import gowalla_split, load_gowalla
from advrec.data.interactions import IdMap, Interactions
from advrec.data.movielens import load_movielens
from advrec.data.registry import list_datasets
from advrec.data.streamed import load_interactions_streamed
from advrec.data.synthetic import fit_power_law, synthetic_interactions

__all__ = [
    "IdMap",
    "Interactions",
    "amazon_scientific_split",
    "fit_power_law",
    "gowalla_split",
    "list_datasets",
    "load_amazon_office",
    "load_amazon_scientific",
    "load_dataset",
    "load_gowalla",
    "load_interactions",
    "load_interactions_streamed",
    "load_movielens",
    "official_split",
    "synthetic_interactions",
]
