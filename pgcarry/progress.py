"""Progress of long work, as the core reports it: tasks with a total and a unit, advanced as the
work is done, and one-line notes. The core takes a ``Progress`` (default ``NULL``: nothing shown)
and never decides how it is shown; the CLI picks the renderer (cli/progress.py).

    with progress.task("stage public.orders", total=len(rows), unit="rows") as task:
        for batch in batches:
            ...
            task.advance(len(batch))
    progress.note("staged public.orders")

A measure the core can only poll (a database's size, bytes a server reports) goes through
``watch(task, measure)``, which sets ``task.update(measure())`` from a thread while a block runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

BYTES = "B"  # the unit renderers scale as sizes (kB, MB ...); any other unit is a count
EVERY = 5000  # items a hot loop handles between two updates (a call per row would cost)


class Task:
    """One piece of long work: `done` of `total` (None: not known) in `unit`. This base class
    only counts; a renderer's subclass shows it (``_changed``, ``_closed``)."""

    shown = False  # watch() polls only for tasks someone sees

    def __init__(self, label: str, total: int | None, unit: str) -> None:
        self.label, self.total, self.unit, self.done = label, total, unit, 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._changed()

    def update(self, done: int, total: int | None = None) -> None:
        """Set the amount done (and the total, when it became known or changed); a polled
        estimate past its total stops at the total."""
        if total is not None:
            self.total = total or None  # nothing to do is not a total to show a share of
        self.done = done if self.total is None else min(done, self.total)
        self._changed()

    def close(self) -> None:
        self._closed()

    def _changed(self) -> None:
        pass

    def _closed(self) -> None:
        pass

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """Where the core reports long work. This base class shows nothing (see ``NULL``)."""

    def task(self, label: str, total: int | None = None, unit: str = "rows") -> Task:
        return Task(label, total, unit)

    def note(self, text: str) -> None:
        """One line about the work (a phase begins, a step ended)."""


NULL = Progress()


@contextmanager
def watch(task: Task, measure: Callable[[], int], interval: float = 1.0) -> Iterator[None]:
    """While the block runs, set ``task.update(measure())`` every `interval` seconds from a
    thread. A failing measure is logged and skipped: progress never stops the work."""
    if not task.shown:
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            try:
                task.update(measure())
            except Exception as e:  # noqa: BLE001 - a progress figure is never worth a failure
                log.debug("progress measure of %s failed: %s", task.label, e)

    thread = threading.Thread(target=poll, name=f"progress {task.label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def total_of(counts: dict[str, dict[str, Any]]) -> int:
    """The number of changes in per-relation, per-operation counts (a log summary's tables)."""
    return sum(int(n) for per in counts.values() for n in per.values())
