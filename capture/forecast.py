"""When the source would invalidate the slot: ``max_slot_wal_keep_size`` caps the WAL a slot may
hold back (pg_replication_slots.safe_wal_size is what is left of it) and the WAL rate says how soon
that is used up. The capture daemon samples pg_current_wal_lsn() into the log's state (a bounded
ring), so `status` computes the last hour's rate even when it runs once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

SAMPLES_KEY = "wal_samples"  # the log's state key of the ring
SAMPLE_INTERVAL = 60.0  # seconds between two samples the daemon keeps
WINDOW = 3600.0  # the rate is the WAL written over the last hour
MAX_SAMPLES = int(WINDOW / SAMPLE_INTERVAL) + 2
START_SAMPLE = 1.0  # seconds `start` measures the WAL rate of the moment over
MB = 1024 * 1024


@dataclass
class WalSamples:
    """(unix time, LSN as an integer) pairs, oldest first, spanning a little over WINDOW."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def from_state(cls, state: Any) -> WalSamples:
        pairs = (state or {}).get("samples") or []
        return cls([(float(t), int(lsn)) for t, lsn in pairs])

    def to_state(self) -> dict[str, Any]:
        return {"samples": [[round(t, 3), lsn] for t, lsn in self.samples]}

    def add(self, now: float, lsn: int) -> None:
        if self.samples and lsn < self.samples[-1][1]:
            self.samples = []  # WAL went backwards: another server (a restored or new cluster)
        kept = [s for s in self.samples if s[0] > now - WINDOW]
        older = [s for s in self.samples if s[0] <= now - WINDOW]
        self.samples = (older[-1:] + kept + [(now, lsn)])[-MAX_SAMPLES:]

    def rate(self, now: float, lsn: int) -> tuple[float, float] | None:
        """(bytes per second, seconds it was measured over) from the sample nearest an hour ago
        to (`now`, `lsn`); None without a usable sample."""
        usable = [s for s in list(self.samples) if s[1] <= lsn and now - s[0] >= 1.0]
        if not usable:
            return None
        before = [s for s in usable if s[0] <= now - WINDOW]
        t, base = before[-1] if before else usable[0]
        return (lsn - base) / (now - t), now - t


def estimate(safe_wal_bytes: int | None, rate: float | None) -> float | None:
    """Seconds until the slot is invalidated at `rate`: 0 when no safe WAL is left (the next
    checkpoint invalidates it), None when nothing caps it or no WAL is being written."""
    if safe_wal_bytes is None:
        return None
    if safe_wal_bytes <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return safe_wal_bytes / rate


def keep_limit(conn: psycopg.Connection) -> int | None:
    """max_slot_wal_keep_size in bytes, None when unlimited (-1)."""
    row = conn.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'"
                       ).fetchone()
    return None if row is None or row[0] < 0 else int(row[0]) * MB


def average_rate(conn: psycopg.Connection) -> tuple[float, str] | None:
    """The server's average WAL rate since its statistics were reset (pg_stat_wal), and when that
    was: the only rate there is before the capture daemon sampled one."""
    try:
        row = conn.execute("SELECT wal_bytes::float8, extract(epoch FROM now() - stats_reset)::float8, "
                           "stats_reset::text FROM pg_stat_wal").fetchone()
    except psycopg.Error:
        return None
    if row is None or not row[1] or row[1] <= 0:
        return None
    return row[0] / row[1], row[2]


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_seconds(s: float) -> str:
    if s < 1:
        return "less than a second"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def current_rate(conn: psycopg.Connection, seconds: float) -> float:
    """The WAL the server writes per second, measured over `seconds` now."""
    def lsn() -> tuple[float, int]:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
        return time.monotonic(), int(row[0])  # type: ignore[index]

    t0, l0 = lsn()
    time.sleep(seconds)
    t1, l1 = lsn()
    return (l1 - l0) / (t1 - t0)


def start_warning(conn: psycopg.Connection, sample_seconds: float = START_SAMPLE) -> str | None:
    """What max_slot_wal_keep_size means for this capture, at the WAL rate of the moment and at
    the server's long-run average; None when it is not set."""
    limit = keep_limit(conn)
    if limit is None:
        return None
    rates = []
    now = current_rate(conn, sample_seconds)
    if now > 0:
        rates.append(f"{human_seconds(limit / now)} at the current rate ({human_bytes(now)}/s over "
                     f"{sample_seconds:g} s)")
    avg = average_rate(conn)
    if avg and avg[0] > 0:
        rates.append(f"{human_seconds(limit / avg[0])} at the server's average since {avg[1]} "
                     f"({human_bytes(avg[0])}/s)")
    text = (f"max_slot_wal_keep_size is {human_bytes(limit)}: the source invalidates the slot (and "
            f"the capture is lost) once it holds back that much WAL")
    if rates:
        text += (f"; that is about {' or '.join(rates)} of WAL: if capture stops or falls behind for "
                 "longer, the slot is lost")
    return text + ("; keep `pgcarry capture` running, watch `pgcarry status` (exit 6 when at risk) or "
                   "pgcarry_slot_invalidation_seconds, and cut over well before")
