"""Progress reporting for every long loop.

On a terminal: a tqdm bar with live figures (losses, metrics). When the
environment sets ``MEDMODELS_PROGRESS=lines`` (the Slicer module does, as it
reads the worker's stdout) each update is instead one flushed line
``PROGRESS <fraction 0..1> <message>``, which a parent process can parse.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: Lines mode prints at most this often (seconds), plus the first and last step.
LINE_INTERVAL = 0.5


#: The part (start, end) of the overall 0..1 progress that the current step
#: covers. A context variable, set only by ``within``, so nested loops (a
#: sampler inside the pipeline) report on the pipeline's scale, not from 0 again.
_SPAN: contextvars.ContextVar[tuple[float, float]] = contextvars.ContextVar(
    "medmodels_progress_span", default=(0.0, 1.0)
)


@contextlib.contextmanager
def within(start: float, end: float):
    """Map every fraction reported inside the block into ``[start, end]`` of
    the enclosing span: ``with within(0.1, 0.9): synthesize(...)``."""
    outer = _SPAN.get()
    width = outer[1] - outer[0]
    token = _SPAN.set((outer[0] + width * start, outer[0] + width * end))
    try:
        yield
    finally:
        _SPAN.reset(token)


def lines_mode() -> bool:
    return os.environ.get("MEDMODELS_PROGRESS", "").lower() == "lines"


def emit(fraction: float, message: str) -> None:
    """One progress line (lines mode) for steps that are not loops."""
    if lines_mode():
        lo, hi = _SPAN.get()
        fraction = lo + (hi - lo) * min(max(fraction, 0.0), 1.0)
        print(f"PROGRESS {fraction:.4f} {message}", flush=True)
    else:
        print(message, file=sys.stderr, flush=True)


class progress(Iterator[T]):  # noqa: N801 - used like tqdm, a function-style name
    """Wrap an iterable: ``for x in progress(items, desc="Training"): ...``.

    Args:
        iterable: what to iterate over.
        total: number of items when ``len(iterable)`` does not give it.
        desc: what the loop does, shown before the bar or in the line.
        disable: no output at all (e.g. on non-zero DDP ranks).

    In lines mode the loop reports 0..1 of the part ``within`` gives it, so
    several loops make one overall progress.
    """

    def __init__(self, iterable: Iterable[T], total: int | None = None, desc: str = "", disable: bool = False) -> None:
        self._it = iter(iterable)
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.n = desc, 0
        self._postfix = ""
        self._lines = lines_mode() and not disable
        self._last = 0.0
        self._bar = (
            None if (self._lines or disable) else tqdm(total=self.total, desc=desc, dynamic_ncols=True, file=sys.stderr)
        )
        if self._lines:
            self._line(force=True)

    def set_postfix(self, **figures: float | str) -> None:
        """Show live figures, e.g. ``loss=0.42``."""
        self._postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix, refresh=False)

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < LINE_INTERVAL:
            return
        self._last = now
        done = self.n / self.total if self.total else 0.0
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        emit(done, f"{self.desc} {count} {self._postfix}".strip())

    def __iter__(self) -> progress[T]:
        return self

    def __next__(self) -> T:
        try:
            item = next(self._it)
        except StopIteration:
            self.close()
            raise
        if self.n:
            self._advance()
        self.n += 1
        return item

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
        elif self._lines:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self.n - self._bar.n)
            self._bar.close()
            self._bar = None
        elif self._lines:
            self._line(force=True)
            self._lines = False
