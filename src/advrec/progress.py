"""Progress of long work: a tqdm bar on a terminal, one log line per step elsewhere.

Progress is shown where a caller asks for it (a model's `verbose=True`, `evaluate(progress=True)`) or everywhere
once `enable_progress()` has been called (the command line does). Without a terminal (a pipe, a log file, CI)
each step is one INFO line on the `advrec.progress` logger: what the step reported, the time so far and an
estimate of the time left.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("advrec.progress")
_enabled = False


def enable_progress(on: bool = True) -> None:
    """Show the progress of every long operation in this process (bars on a terminal, else log lines)."""
    global _enabled
    _enabled = on


def progress_wanted(asked: bool | None) -> bool:
    """Whether to show progress: as `asked`, or as `enable_progress` set it when `asked` is None."""
    return _enabled if asked is None else bool(asked)


def progress_bar(iterable: Iterable[T], desc: str = "", disable: bool = False, **kw: Any) -> tqdm:
    """A tqdm bar over `iterable`; off when `disable` or when stderr is not a terminal."""
    return tqdm(iterable, desc=desc, disable=disable or not sys.stderr.isatty(), leave=False, **kw)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Steps(Generic[T]):
    """Iterates over `steps`, showing progress when `show`: a bar on a terminal, else a line per step.

    `report(row)` after a step shows what it measured (the bar's postfix, or the step's log line); a step with
    no report is logged when the next one starts. Time left assumes the remaining steps take as long as the
    ones so far (an upper bound where early stopping may end the loop sooner: `may_stop_early`).
    """

    def __init__(
        self, steps: Sequence[T], desc: str, show: bool, unit: str = "step", may_stop_early: bool = False
    ) -> None:
        self.steps, self.desc, self.unit, self.may_stop_early = steps, desc, unit, may_stop_early
        self.bar = progress_bar(steps, desc=desc, disable=not show, unit=unit)
        self.lines = show and self.bar.disable
        self.done, self.pending = 0, False
        self.t0 = time.perf_counter()

    def __iter__(self) -> Iterator[T]:
        for item in self.bar:
            self._flush()
            self.pending = True
            yield item
            self.done += 1
        self._flush()

    def report(self, row: dict[str, Any]) -> None:
        """What the current step measured."""
        shown = {k: v for k, v in row.items() if k not in {"epoch", "iteration", self.unit}}
        if not self.lines:
            self.bar.set_postfix({k: _fmt(v) for k, v in shown.items()})
            return
        self.pending = False
        self._line(self.done + 1, ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))

    def _flush(self) -> None:
        if self.lines and self.pending and self.done:
            self.pending = False
            self._line(self.done, "")

    def _line(self, n: int, what: str) -> None:
        total = len(self.steps)
        elapsed = time.perf_counter() - self.t0
        left = elapsed / n * (total - n)
        bound = "at most " if self.may_stop_early else ""
        head = f"{self.desc}: {self.unit} {n} of {total}"
        log.info("%s%s; %.1f s so far, %sabout %.1f s left", head, f": {what}" if what else "", elapsed, bound, left)
