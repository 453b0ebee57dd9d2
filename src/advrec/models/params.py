"""Hyperparameter declarations: what each constructor parameter of a model may be, checked in one place.

A model declares `_parameter_constraints = {"name": [constraint, ...]}`; a value is valid when it satisfies
any constraint of its list. A constraint is an `Interval`, `Options`, `TupleOf`, a plain type (`int`,
`float`, `bool`, `str`, or any class, checked with isinstance) or `None`. `bool` is never an int, and a
float parameter accepts ints. `validate_params` checks values; `coerce` reads command-line text.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from advrec.errors import ConfigError

CLOSED = ("left", "right", "both", "neither")
NONE_TEXT = ("none", "null")


class _Unparsed:
    """The result of parsing text that a constraint cannot read."""


UNPARSED: Any = _Unparsed()


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool | np.bool_)


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class Constraint:
    """A set of allowed values: `satisfied_by(value)`, `parse(text)` and a description (`str`)."""

    def satisfied_by(self, value: Any) -> bool:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        """The value `text` stands for, or `UNPARSED`."""
        return UNPARSED


class Interval(Constraint):
    """Numbers of `kind` (int or float) between `low` and `high` (None: unbounded; then ±inf is refused).

    `closed`: which ends belong to the interval, "left", "right", "both" or "neither". NaN never does.
    """

    def __init__(
        self, kind: type[int] | type[float], low: float | None, high: float | None, closed: str = "both"
    ) -> None:
        if kind not in (int, float):
            raise TypeError(f"Interval kind must be int or float, got {kind!r}")
        if closed not in CLOSED:
            raise TypeError(f"Interval closed must be one of {CLOSED}, got {closed!r}")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def satisfied_by(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind is int else _is_real(value)):
            return False
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return False
        if self.low is not None and (v < self.low or (v == self.low and self.closed in ("right", "neither"))):
            return False
        return not (
            self.high is not None and (v > self.high or (v == self.high and self.closed in ("left", "neither")))
        )

    def parse(self, text: str) -> Any:
        try:
            return int(text) if self.kind is int else float(text)
        except ValueError:
            return UNPARSED

    def __str__(self) -> str:
        left = "[" if self.low is not None and self.closed in ("left", "both") else "("
        right = "]" if self.high is not None and self.closed in ("right", "both") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'an int' if self.kind is int else 'a float'} in {left}{low}, {high}{right}"


class Options(Constraint):
    """One of a set of strings."""

    def __init__(self, options: Iterable[str]) -> None:
        self.options = frozenset(options)

    def satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def parse(self, text: str) -> Any:
        return _strip_quotes(text)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in sorted(self.options))


class TupleOf(Constraint):
    """A tuple (or list) of `kind` (int, float or str) items, `min_len` to `max_len` of them (None: no upper bound);
    numbers at least `low` (floats finite; a float tuple takes ints too)."""

    def __init__(
        self, kind: type[int] | type[float] | type[str], low: float | None = None, min_len: int = 0,
        max_len: int | None = None,
    ) -> None:  # fmt: skip
        self.kind, self.low, self.min_len, self.max_len = kind, low, min_len, max_len

    def _item_ok(self, item: Any) -> bool:
        if self.kind is str:
            return isinstance(item, str)
        if self.kind is float:
            return _is_real(item) and math.isfinite(float(item)) and (self.low is None or item >= self.low)
        return _is_int(item) and (self.low is None or item >= self.low)

    def satisfied_by(self, value: Any) -> bool:
        return (
            isinstance(value, tuple | list)
            and self.min_len <= len(value) <= (len(value) if self.max_len is None else self.max_len)
            and all(self._item_ok(v) for v in value)
        )

    def parse(self, text: str) -> Any:
        inner = text.strip()
        if inner[:1] + inner[-1:] in ("[]", "()"):
            inner = inner[1:-1]
        parts = [p.strip() for p in inner.split(",") if p.strip()]
        if self.kind is str:
            return tuple(_strip_quotes(p) for p in parts)
        try:
            return tuple((float if self.kind is float else int)(p) for p in parts)
        except ValueError:
            return UNPARSED

    def __str__(self) -> str:
        items = {int: "ints", float: "floats", str: "strings"}[self.kind]
        if self.low is not None:
            items += f" ≥ {self.low:g}"
        if self.max_len is not None and self.max_len == self.min_len:
            size = f"{self.min_len}-item "
        elif self.max_len is not None:
            size = f"{self.min_len}- to {self.max_len}-item "
        else:
            size = "non-empty " if self.min_len == 1 else f"{self.min_len}+ item " if self.min_len > 1 else ""
        return f"a {size}tuple of {items}"


class InstanceOf(Constraint):
    """Instances of a type; `int` excludes bool, `float` takes ints too."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def satisfied_by(self, value: Any) -> bool:
        if self.kind is int:
            return _is_int(value)
        if self.kind is float:
            return _is_real(value)
        if self.kind is bool:
            return isinstance(value, bool | np.bool_)
        return isinstance(value, self.kind)

    def parse(self, text: str) -> Any:
        if self.kind is str:
            return _strip_quotes(text)
        if self.kind is bool:
            return {"true": True, "false": False, "1": True, "0": False}.get(text.lower(), UNPARSED)
        if self.kind in (int, float):
            try:
                return self.kind(text)
            except ValueError:
                return UNPARSED
        return UNPARSED

    def __str__(self) -> str:
        name = {int: "int", float: "float", bool: "bool", str: "str"}.get(self.kind, self.kind.__name__)
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


class IsNone(Constraint):
    def satisfied_by(self, value: Any) -> bool:
        return value is None

    def parse(self, text: str) -> Any:
        return None if text.lower() in NONE_TEXT else UNPARSED

    def __str__(self) -> str:
        return "None"


def make_constraint(c: Any) -> Constraint:
    """A constraint object from a declaration entry (a `Constraint`, a type or None)."""
    if isinstance(c, Constraint):
        return c
    if c is None:
        return IsNone()
    if isinstance(c, type):
        return InstanceOf(c)
    raise TypeError(f"unknown parameter constraint {c!r}")


def allowed_text(constraints: list[Any]) -> str:
    """What a list of constraints allows, in words: "an int in [1, inf) or None"."""
    words = [str(make_constraint(c)) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _message(owner: str, name: str, constraints: list[Any], value: Any) -> str:
    head = f"{owner}: " if owner else ""
    return f"{head}{name} must be {allowed_text(constraints)}, got {value!r}"


def is_valid(constraints: list[Any], value: Any) -> bool:
    return any(make_constraint(c).satisfied_by(value) for c in constraints)


def validate_params(cls_name: str, constraints: Mapping[str, list[Any]], params: Mapping[str, Any]) -> None:
    """Raises `ConfigError` naming the first declared parameter whose value none of its constraints allows."""
    for name, value in params.items():
        allowed = constraints.get(name)
        if allowed is not None and not is_valid(allowed, value):
            raise ConfigError(_message(cls_name, name, allowed, value))


def coerce(constraints: Mapping[str, list[Any]], name: str, text: str, owner: str = "") -> Any:
    """The value of command-line `text` for parameter `name`, read as the first constraint that allows it.

    "none" gives None where None is allowed; "400,200" or "[400, 200]" a tuple where one is. Raises
    `ConfigError` (naming `owner`, the parameter and the text) when no constraint reads an allowed value.
    """
    if name not in constraints:
        raise ConfigError(
            f"{owner + ': ' if owner else ''}no declared parameter {name!r}; parameters: {sorted(constraints)}"
        )
    allowed = constraints[name]
    parsed = UNPARSED
    for c in sorted((make_constraint(c) for c in allowed), key=lambda c: not isinstance(c, IsNone)):
        value = c.parse(text.strip())
        if value is UNPARSED:
            continue
        if c.satisfied_by(value):
            return value
        parsed = value if parsed is UNPARSED else parsed
    raise ConfigError(_message(owner, name, allowed, text if parsed is UNPARSED else parsed))


def from_config(constraints: Mapping[str, list[Any]], name: str, value: Any, owner: str = "") -> Any:
    """A configuration value (TOML, JSON) given its declared type: text read by `coerce` where the parameter
    takes no such string, a list as a tuple where a tuple is declared; anything else as it is."""
    allowed = constraints.get(name)
    if allowed is None or (is_valid(allowed, value) and not isinstance(value, list)):
        return value
    if isinstance(value, str):
        return coerce(constraints, name, value, owner)
    if isinstance(value, list) and any(isinstance(c, TupleOf) for c in allowed):
        return tuple(value)
    return value


def literal(text: str) -> Any:
    """`text` as a Python literal (numbers, True, None, lists), or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


RANDOM_STATE: list[Any] = [Interval(int, 0, None, closed="left"), np.random.Generator, None]
"""The constraint of a `random_state` parameter: a non-negative seed, a numpy Generator, or None."""


def declare(*bases: Mapping[str, list[Any]], drop: Iterable[str] = (), **params: list[Any]) -> dict[str, list[Any]]:
    """A declaration: those of `bases` merged (less the names in `drop`), then `params` (name=[constraint, ...])."""
    out = {k: v for base in bases for k, v in base.items() if k not in set(drop)}
    for name, allowed in params.items():
        for c in allowed:
            make_constraint(c)  # a typo in a declaration fails at import
        out[name] = allowed
    return out


# ---------------------------------------------------------------------- search spaces (advrec.tuning)
class Dimension:
    """One searched hyperparameter: `suggest(trial, name)` draws its value from an Optuna trial; `points()` are
    values that bound it (checked against the parameter's declared constraints); `check(owner, name)` refuses a
    malformed dimension with a `ConfigError`."""

    def suggest(self, trial: Any, name: str) -> Any:
        raise NotImplementedError

    def points(self) -> list[Any]:
        raise NotImplementedError

    def check(self, owner: str, name: str) -> None:
        """A `ConfigError` naming `owner.name` when the dimension is empty or cannot be searched."""


class Float(Dimension):
    """Floats in [low, high]; `log`: drawn uniformly on a log scale (then low > 0)."""

    def __init__(self, low: float, high: float, log: bool = False) -> None:
        self.low, self.high, self.log = float(low), float(high), log

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))

    def points(self) -> list[Any]:
        return [self.low, self.high]

    def check(self, owner: str, name: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ConfigError(f"{owner}: search space of {name!r}: Float needs finite low ≤ high, got {self}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{owner}: search space of {name!r}: a log-scale Float needs low > 0, got {self}")

    def __repr__(self) -> str:
        return f"Float({self.low:g}, {self.high:g}{', log=True' if self.log else ''})"


class Int(Float):
    """Ints in [low, high]; `log`: drawn uniformly on a log scale (then low ≥ 1)."""

    def __init__(self, low: int, high: int, log: bool = False) -> None:
        super().__init__(low, high, log)
        self.low, self.high = int(low), int(high)  # type: ignore[assignment]

    def suggest(self, trial: Any, name: str) -> int:  # type: ignore[override]
        return int(trial.suggest_int(name, int(self.low), int(self.high), log=self.log))

    def __repr__(self) -> str:
        return f"Int({self.low}, {self.high}{', log=True' if self.log else ''})"


class Choice(Dimension):
    """One of a few values (numbers, strings, bools or None)."""

    def __init__(self, options: Iterable[Any]) -> None:
        self.options = tuple(options)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, self.options)

    def points(self) -> list[Any]:
        return list(self.options)

    def check(self, owner: str, name: str) -> None:
        if not self.options:
            raise ConfigError(f"{owner}: search space of {name!r}: Choice needs at least one option")
        bad = [o for o in self.options if o is not None and not isinstance(o, bool | int | float | str)]
        if bad:
            raise ConfigError(f"{owner}: search space of {name!r}: options must be numbers, text, bools or None")

    def __repr__(self) -> str:
        return f"Choice({list(self.options)!r})"


def check_space(owner: str, constraints: Mapping[str, list[Any]], space: Mapping[str, Dimension]) -> None:
    """Refuses (`ConfigError`) a search space over an undeclared parameter, or one reaching a value the parameter's
    constraints refuse (an interval's two ends are checked; the declared sets are intervals, so all between is)."""
    for name, dim in space.items():
        if not isinstance(dim, Dimension):
            raise ConfigError(f"{owner}: search space of {name!r} must be a Float, Int or Choice, got {dim!r}")
        if name not in constraints:
            raise ConfigError(f"{owner}: search space over {name!r}, which is not a parameter; parameters: "
                              f"{sorted(constraints)}")  # fmt: skip
        dim.check(owner, name)
        for value in dim.points():
            if not is_valid(constraints[name], value):
                raise ConfigError(
                    f"{owner}: search space {dim!r} of {name!r} reaches {value!r}, but {name} must be "
                    f"{allowed_text(constraints[name])}"
                )
