"""Exception classes of advrec. Every message names the file, line, key or id at fault."""

from __future__ import annotations


class AdvrecError(Exception):
    """Base class of every error advrec raises on purpose."""


class DataError(AdvrecError, ValueError):
    """Input data is malformed: a bad row, a missing column, NaN, an empty file."""


class DatasetNotFoundError(AdvrecError, FileNotFoundError):
    """A dataset's files are not where they should be and could not be downloaded."""


class UnknownDatasetError(AdvrecError, KeyError):
    """A dataset name that advrec does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class UnknownIdError(AdvrecError, KeyError):
    """A raw user or item id that is not in the id map."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFittedError(AdvrecError, RuntimeError):
    """A model was used before `fit`."""


class ConfigError(AdvrecError, ValueError):
    """A bad hyperparameter or configuration key."""


class ModelFileError(AdvrecError, ValueError):
    """A saved model or run directory is incomplete or inconsistent."""
