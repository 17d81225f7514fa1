"""Progress of long loops: a bar on a terminal, plain periodic lines anywhere else.

A tqdm bar redrawn with carriage returns is right on a terminal and wrong in a log file or a
pipe (one line of tens of thousands of characters). :func:`progress_bar` gives the bar when
standard error is a terminal and otherwise a :class:`LineProgress`, which writes one plain
line every ``interval`` seconds and one at the end:

    train hog: 120/300 steps (40%), 35.2 s, 3.4 steps/s, loss=0.0712
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

from tqdm.auto import tqdm

__all__ = ["LineProgress", "progress_bar"]

T = TypeVar("T")

#: seconds between two plain progress lines
INTERVAL = 30.0


class LineProgress:
    """The subset of tqdm's API the pipeline uses, printing plain lines.

    Parameters
    ----------
    total : int or None
    desc : str
    unit : str
    initial : int
    disable : bool
    interval : float
        Seconds between lines; the last line is written by :meth:`close`.
    file : text stream, optional
        Default: standard error.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        interval: float = INTERVAL,
        file: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.disable, self.interval = initial, disable, interval
        self.file = file
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._initial = initial
        self._closed = False

    def _line(self) -> str:
        elapsed = time.monotonic() - self._start
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        tail = f", {self.postfix}" if self.postfix else ""
        unit = self.unit
        return f"{self.desc}: {done} {unit}s{pct}, {elapsed:.1f} s, {rate:.3g} {unit}s/s{tail}"

    def _write(self) -> None:
        print(self._line(), file=self.file or sys.stderr, flush=True)
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable and time.monotonic() - self._last >= self.interval:
            self._write()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed and not self.disable:
            self._write()
        self._closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    iterable: Iterable[T] | None = None, *, force_lines: bool | None = None, **kwargs: Any
) -> Any:
    """A progress bar (terminal) or a :class:`LineProgress` (file, pipe); tqdm's arguments.

    With ``iterable``, returns an iterator over it that counts; else the progress object
    (``update``, ``set_postfix``, ``close``).
    """
    lines = not sys.stderr.isatty() if force_lines is None else force_lines
    if not lines:
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, **kwargs) if iterable is not None else tqdm(**kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.pop("leave", None)
    bar = LineProgress(
        kwargs.pop("total", None)
        if iterable is None
        else _len(iterable, kwargs.pop("total", None)),
        **kwargs,
    )
    if iterable is None:
        return bar
    return _counting(iterable, bar)


def _len(iterable: Iterable[Any], total: int | None) -> int | None:
    if total is not None:
        return total
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _counting(iterable: Iterable[T], bar: LineProgress) -> Iterator[T]:
    with bar:
        for item in iterable:
            yield item
            bar.update(1)
