"""advrec: recommender systems that are accurate, robust and private."""

__version__ = "0.1.0"
