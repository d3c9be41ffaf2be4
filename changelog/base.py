"""The change-log contract shared by the SQLite and Kafka backends.

One writer (the capture daemon, under ``lock()``) appends transactions as they stream in and calls
``sync()`` to make them durable; readers see only complete transactions, once each, in commit order.
A transaction is identified by its commit LSN (wal2json's begin message already names it), a change
by (commit LSN, sequence): a re-received transaction is stored once, and one whose commit never
arrived is never read.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgcarry.errors import LogError
from pgcarry.schemas.change import Change, Transaction
from pgcarry.schemas.lsn import Lsn
from pgcarry.schemas.manifest import Manifest

Counts = dict[str, dict[str, int]]  # "schema.table" -> {"insert": n, "update": n, ...}
RawChange = tuple[int, int, str, str, str, str]  # commit LSN, LSN, action, schema, table, raw


@dataclass
class LogSummary:
    transactions: int = 0
    first_commit_time: str | None = None
    last_commit_time: str | None = None
    last_commit_lsn: Lsn | None = None
    tables: Counts = field(default_factory=dict)
    # copies whose commit marker arrived with changes missing (commit LSN, changes read, n):
    # not complete, so not read; the re-sent copy replaces them
    holes: list[tuple[Lsn, int, int]] = field(default_factory=list)


class ChangeLog(ABC):
    """A durable, de-duplicating log of committed source transactions."""

    # -- writing (capture daemon) --------------------------------------------------------------
    @abstractmethod
    def begin(self, xid: int, commit_lsn: Lsn) -> bool:
        """Open a transaction. False when the log already holds it complete: skip its changes."""

    @abstractmethod
    def append(self, change: Change) -> None:
        """Add a change of the open transaction (written out as it arrives, not held in memory)."""

    @abstractmethod
    def commit(self, commit_time: str | None) -> None:
        """Close the open transaction; it counts as complete once ``sync()`` returned."""

    @abstractmethod
    def sync(self) -> Lsn | None:
        """Make everything written durable; return the highest durable commit LSN (empty
        transactions included: they move the position the slot may be confirmed to)."""

    # -- reading --------------------------------------------------------------------------------
    @abstractmethod
    def transactions(self, after: Lsn | None = None) -> Iterator[Transaction]:
        """Complete transactions with commit LSN > `after`, in commit order, changes in sequence."""

    def raw_changes(self, after: Lsn | None = None) -> Iterator[RawChange]:
        """The changes of ``transactions(after)`` as plain (commit LSN, LSN, action, schema,
        table, raw JSON) tuples in the same order, without building Change objects (replay's bulk
        path). A backend may override this with one streaming query."""
        for t in self.transactions(after):
            c = t.commit_lsn.value
            for ch in t.changes:
                yield (c, ch.lsn.value, ch.action, ch.schema, ch.table, ch.raw)

    def slot_acquired(self) -> None:  # noqa: B027 - a backend with one writer by construction
        """Called when capture starts streaming the slot (no other process streams it now)."""

    def keepalive(self) -> None:  # noqa: B027 - a backend without a lease
        """Called while the writer waits (source away, backoff): keep its claim on the log."""

    def check_integrity(self) -> None:  # noqa: B027 - a backend without its own check
        """Raise LogError when the stored log is damaged."""

    @abstractmethod
    def summary(self) -> LogSummary:
        """Counts per relation and action over the complete transactions."""

    @abstractmethod
    def size_bytes(self) -> int: ...

    def raw_bytes(self) -> int | None:
        """The stored changes' size before compression (None when the backend does not know):
        ``status`` prints it against ``size_bytes()`` as the compression ratio."""
        return None

    # -- manifest and state ---------------------------------------------------------------------
    def read_manifest(self) -> Manifest | None:
        raw = self.get_state("manifest")
        return Manifest.model_validate(raw) if raw is not None else None

    def write_manifest(self, manifest: Manifest) -> None:
        self.set_state("manifest", manifest.model_dump(mode="json"))

    @abstractmethod
    def get_state(self, key: str) -> Any: ...

    @abstractmethod
    def set_state(self, key: str, value: Any) -> None:
        """Store a JSON value durably (cutover phases, confirmed positions)."""

    @property
    @abstractmethod
    def lock_path(self) -> Path: ...

    def lock(self) -> DaemonLock:
        return DaemonLock(self.lock_path)

    def active_writer(self) -> dict[str, Any] | None:
        """The capture daemon writing this log other than this process ({"host", "pid"}), or
        None. The SQLite log knows its own host only (its lock file)."""
        pid = self.lock().held_by_other()
        return None if pid is None else {"host": socket.gethostname(), "pid": pid}

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> ChangeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaemonLock:
    """An exclusive advisory lock: one capture daemon per log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LogError(
                f"another capture daemon holds the log (pid {holder})",
                hint="stop it first, or use `pgcarry status` to watch it",
                lock=str(self.path),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def held_by_other(self) -> int | None:
        """The pid of a running daemon holding the lock, or None."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)
        return None

    def stop_holder(self, timeout: float = 120.0) -> int | None:
        """SIGTERM the daemon holding the lock and wait until it released it (its last batch is
        then durable and confirmed). Returns its pid, or None when no daemon ran."""
        pid = self.held_by_other()
        if pid is None or pid <= 0:
            return None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.held_by_other() is not None:
            if time.monotonic() > deadline:
                raise LogError(f"the capture daemon (pid {pid}) did not stop within {timeout:.0f}s")
            time.sleep(0.1)
        return pid

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
