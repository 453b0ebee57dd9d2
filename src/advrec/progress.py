"""Progress bars (tqdm), shown only on a terminal and when not asked to be quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], desc: str = "", disable: bool = False, **kw: Any) -> tqdm:
    """A tqdm bar over `iterable`; off when `disable` or when stderr is not a terminal."""
    return tqdm(iterable, desc=desc, disable=disable or not sys.stderr.isatty(), leave=False, **kw)
