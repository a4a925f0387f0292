"""Progress of a long step as log lines at a steady cadence: done/total, rate and ETA.

A producer (the vector engine, a raw fetch) reports a :class:`Progress` as often as it
likes; a :class:`ProgressLog` decides which reports become a line. Core code stays free
of Dagster: the asset passes its own logger (``context.log`` is a ``logging.Logger``) or
any ``str -> None`` callable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_INTERVAL_S = 10.0
DEFAULT_MIN_FRACTION = 0.05


@dataclass(frozen=True)
class Progress:
    """How far one piece of work has come."""

    what: str  # names the work in the line, e.g. the collection "client_1_issues"
    done: int
    total: int | None  # None while unknown (a search that does not say how many it will return)
    elapsed_s: float
    unit: str = "rows"

    @property
    def rate(self) -> float | None:
        """Units per second since the start."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None without a total or a rate."""
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def line(self) -> str:
        """``client_1_issues: 12,000/50,000 rows (24%), 850 rows/s, ETA 45s``."""
        if self.total is not None:
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total > 0 else ""
            text = f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{share}"
        else:
            text = f"{self.what}: {self.done:,} {self.unit}"
        rate = self.rate
        if rate is not None:
            text += f", {rate:,.1f} {self.unit}/s" if rate < 10 else f", {rate:,.0f} {self.unit}/s"
        eta = self.eta_s
        if eta is not None and self.total is not None and self.done < self.total:
            text += f", ETA {_duration(eta)}"
        elif self.total is not None and self.done >= self.total:
            text += f", done in {_duration(self.elapsed_s)}"
        return text


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLog:
    """A ``Progress -> None`` callback that writes a line at a steady cadence.

    A line is written when at least ``interval_s`` have passed since the last one *and*
    the work moved by at least ``min_fraction`` of the total (whichever is rarer), so a
    fast step is not flooded and a slow one still speaks every ``interval_s`` at most.
    With no total known, time alone decides. The report that reaches the total is written
    too, but only when earlier lines were: a short step stays silent.
    """

    def __init__(
        self,
        sink: logging.Logger | Callable[[str], None] | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        min_fraction: float = DEFAULT_MIN_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(sink, logging.Logger):
            self._write: Callable[[str], None] = sink.info
        elif sink is None:
            self._write = log.info
        else:
            self._write = sink
        self.interval_s = interval_s
        self.min_fraction = min_fraction
        self.clock = clock
        self.lines = 0
        self._last_at = clock()
        self._last_done = 0
        self._finished = False

    def __call__(self, progress: Progress) -> None:
        now = self.clock()
        total = progress.total
        if total is not None and progress.done >= total:
            if self.lines and not self._finished:
                self._finished = True
                self._emit(progress, now)
            return
        if now - self._last_at < self.interval_s:
            return
        if total and progress.done - self._last_done < self.min_fraction * total:
            return
        self._emit(progress, now)

    def _emit(self, progress: Progress, now: float) -> None:
        self.lines += 1
        self._last_at, self._last_done = now, progress.done
        self._write(progress.line())


def counted(
    items: Iterable[T],
    progress: Callable[[Progress], None],
    what: str,
    *,
    size: Callable[[T], int] = lambda _: 1,
    unit: str = "pages",
    total: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """``items`` unchanged, reporting to ``progress`` after each how many (``size`` each) went by.

    For a stream whose length is unknown up front, such as the pages of a raw fetch:
    ``counted(pages, ProgressLog(context.log), "issues of tenant 1", size=records_in, unit="records")``.
    """
    started = clock()
    done = 0
    for item in items:
        yield item  # counted once the consumer is done with it and asks for the next
        done += size(item)
        progress(Progress(what, done, total, clock() - started, unit))
