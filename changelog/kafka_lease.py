"""One writer per Kafka log, across hosts: a lease record ("writer") in the state topic.

A writer claims the log by writing {epoch, id, host, pid, beat}; it renews the beat every few
seconds and, before every confirmation to the slot, checks that the latest "writer" record is still
its own. A newcomer is refused while the holder's beat is fresh; a stale holder (crashed, frozen,
cut off) is taken over with epoch + 1 and stops at its next check without confirming anything more.
The latest record wins, so two newcomers racing for one stale lease cannot both go on: each reads
back after its claim, and the earlier one finds the later claim at its first check. Why this is
safe for the data, interleaving by interleaving: docs/kafka.md ("One writer").
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from pgcarry.errors import LogError, WriterFencedError

KEY = "writer"
LEASE = float(os.environ.get("PGCARRY_KAFKA_LEASE", "30"))  # seconds a holder's beat stays valid
BEAT = LEASE / 6  # seconds between renewals


def _alive_here(rec: dict[str, Any]) -> bool:
    """False when the holder ran on this host and its pid is gone (it crashed: no need to wait)."""
    if rec.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(rec["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        pass
    return True


def live(rec: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a lease record describes a writer that may still be writing."""
    if not rec or rec.get("released"):
        return False
    return (now or time.time()) - float(rec.get("beat", 0)) < LEASE and _alive_here(rec)


def describe(rec: dict[str, Any]) -> str:
    age = max(0.0, time.time() - float(rec.get("beat", 0)))
    return f"host {rec.get('host')}, pid {rec.get('pid')}, last seen {age:.0f}s ago"


class Lease:
    """The lease of one writer. `read()` returns the latest "writer" record; `write(rec)` stores
    one durably (both through the log's state topic)."""

    def __init__(self, read: Callable[[], dict[str, Any] | None],
                 write: Callable[[dict[str, Any]], None], what: str) -> None:
        self._read, self._write, self.what = read, write, what
        self.id = uuid.uuid4().hex
        self.epoch = 0
        self._beat = 0.0

    def _record(self, **extra: Any) -> dict[str, Any]:
        return {"epoch": self.epoch, "id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                "beat": time.time(), **extra}

    def acquire(self) -> Lease:
        held = self._read()
        if live(held) and held and held.get("id") != self.id:
            raise LogError(f"another capture daemon writes {self.what} ({describe(held)})",
                           hint="stop it first (it runs on that host), or wait until its lease "
                                f"of {LEASE:.0f}s has run out if it is gone")
        self.epoch = int((held or {}).get("epoch", 0)) + 1
        self._write(self._record())
        self._beat = time.monotonic()
        self.check()  # a newcomer that claimed right after us wins: we stop here
        return self

    def check(self) -> None:
        """Raise WriterFencedError unless the latest lease record is ours."""
        rec = self._read()
        if not rec or rec.get("id") != self.id:
            who = describe(rec) if rec else "the lease record is gone"
            raise WriterFencedError(
                f"another writer took over {self.what} ({who}); this one stops without confirming",
                hint="only one capture daemon may write a log; the other one goes on")

    def renew(self, extra: dict[str, Any] | None = None) -> bool:
        """Check, then renew the beat when it is due; True when it renewed."""
        self.check()
        if time.monotonic() - self._beat < BEAT:
            return False
        self._write(self._record(**(extra or {})))
        self._beat = time.monotonic()
        return True

    def release(self) -> None:
        rec = self._read()
        if rec and rec.get("id") == self.id:
            self._write(self._record(released=True))
