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
