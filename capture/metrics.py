"""Prometheus metrics of the capture daemon (served only with --metrics-port)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, start_http_server

from pgcarry.schemas.change import ACTION_NAMES
from pgcarry.schemas.lsn import Lsn


class Metrics:
    def __init__(self, port: int) -> None:
        self.changes = Counter(
            "pgcarry_changes", "Changes captured", ["table", "operation"]
        )
        self.transactions = Counter("pgcarry_transactions", "Transactions captured")
        self.confirmed_lsn = Gauge("pgcarry_confirmed_lsn", "LSN confirmed to the slot (bytes)")
        self.lag_bytes = Gauge("pgcarry_lag_bytes", "WAL between the source's current LSN and the confirmed LSN")
        self.wal_held_bytes = Gauge("pgcarry_wal_held_bytes", "WAL the slot holds back (from restart_lsn)")
        self.last_commit = Gauge("pgcarry_last_commit_timestamp_seconds", "Commit time of the last captured transaction")
        self.safe_wal = Gauge("pgcarry_slot_safe_wal_bytes",
                              "WAL the source may still write before it invalidates the slot (safe_wal_size)")
        self.invalidation = Gauge("pgcarry_slot_invalidation_seconds",
                                  "Estimated seconds until the slot is invalidated at the last hour's WAL rate")
        self.wal_rate = Gauge("pgcarry_wal_rate_bytes_per_second", "WAL the source wrote per second, last hour")
        self.forecast(None, None, None)  # not 0 (an alert would fire) before the first poll
        start_http_server(port, addr="127.0.0.1")

    def change(self, relation: str, action: str) -> None:
        self.changes.labels(relation, ACTION_NAMES.get(action, action)).inc()

    def commit(self, timestamp: str | None) -> None:
        self.transactions.inc()
        if timestamp:
            try:
                self.last_commit.set(datetime.fromisoformat(timestamp).timestamp())
            except ValueError:
                pass

    def confirmed(self, lsn: Lsn) -> None:
        self.confirmed_lsn.set(lsn.value)

    def slot(self, lag: int | None, held: int | None) -> None:
        if lag is not None:
            self.lag_bytes.set(lag)
        if held is not None:
            self.wal_held_bytes.set(held)

    def forecast(self, safe: int | None, rate: float | None, seconds: float | None) -> None:
        """NaN where unknown (no max_slot_wal_keep_size, no rate yet): an alert rule's
        comparison with NaN is false, so it does not fire on what is not known."""
        nan = float("nan")
        self.safe_wal.set(nan if safe is None else safe)
        self.wal_rate.set(nan if rate is None else rate)
        self.invalidation.set(nan if seconds is None else seconds)
