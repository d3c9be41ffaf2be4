"""How the CLI shows the core's progress (pgcarry/progress.py) on stderr: a tqdm bar with the
amount done, rate and time left on a terminal; plain lines every few seconds in a pipe or a log
file; nothing for --json. tqdm draws the bar (widths, smoothing, redraws around notes), so no
terminal code lives here.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

from pgcarry.progress import BYTES, NULL, Progress, Task

LINE_INTERVAL = 10.0  # seconds between two plain lines of one task
# tqdm's own format, with the unit after the amount too ("1.2MB/3.4MB", "5.00k/9.00k rows")
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _amount(n: float, unit: str) -> str:
    if unit == BYTES:
        return tqdm.format_sizeof(n, "B", 1024)
    return f"{tqdm.format_sizeof(n) if n >= 10_000 else int(n)} {unit}"


class _BarTask(Task):
    shown = True

    def __init__(self, label: str, total: int | None, unit: str, out: TextIO) -> None:
        super().__init__(label, total, unit)
        scale = {"unit_scale": True, "unit_divisor": 1024} if unit == BYTES else {"unit_scale": True}
        self._bar = tqdm(total=total, desc=label, unit=unit if unit == BYTES else f" {unit}",
                         file=out, dynamic_ncols=True, mininterval=0.2, leave=True,
                         bar_format=BAR_FORMAT if total else None, **scale)
        self._lock = threading.Lock()  # watch() updates from its thread

    def _changed(self) -> None:
        with self._lock:
            if self.total is not None and self._bar.total != self.total:
                self._bar.total, self._bar.bar_format = self.total, BAR_FORMAT
            self._bar.update(self.done - self._bar.n)

    def _closed(self) -> None:
        with self._lock:
            if self.total is not None and self.done < self.total:
                self._bar.update(self.total - self._bar.n)  # estimates end at 100 %
            self._bar.close()


class BarProgress(Progress):
    """For a terminal: one tqdm bar per task, notes printed above the bars."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def task(self, label: str, total: int | None = None, unit: str = "rows") -> Task:
        return _BarTask(label, total, unit, self.out)

    def note(self, text: str) -> None:
        tqdm.write(text, file=self.out)


class _LineTask(Task):
    shown = True

    def __init__(self, label: str, total: int | None, unit: str, out: TextIO, interval: float) -> None:
        super().__init__(label, total, unit)
        self.out, self.interval = out, interval
        self._start = self._last = time.monotonic()

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {_amount(self.done, self.unit)}"
        if self.total:
            text += f" of {_amount(self.total, self.unit)} ({min(100, 100 * self.done // self.total)}%)"
        text += f", {_amount(rate, self.unit)}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", {tqdm.format_interval((self.total - self.done) / rate)} left"
        return text

    def _changed(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(self.line(now), file=self.out, flush=True)

    def _closed(self) -> None:
        now = time.monotonic()
        if self.total is not None:
            self.done = max(self.done, self.total)
        print(f"{self.line(now)}, done in {tqdm.format_interval(now - self._start)}",
              file=self.out, flush=True)


class LinesProgress(Progress):
    """For a pipe or a log file: a plain line per task every `interval` seconds and when it ends."""

    def __init__(self, out: TextIO, interval: float = LINE_INTERVAL) -> None:
        self.out, self.interval = out, interval

    def task(self, label: str, total: int | None = None, unit: str = "rows") -> Task:
        return _LineTask(label, total, unit, self.out, self.interval)

    def note(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def for_output(as_json: bool, out: TextIO | None = None) -> Progress:
    """The renderer for this run: nothing with --json, a bar on a terminal, else plain lines."""
    out = out or sys.stderr
    if as_json:
        return NULL
    return BarProgress(out) if out.isatty() else LinesProgress(out)
