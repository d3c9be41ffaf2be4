"""The durable change log between capture and replay: SQLite (embedded, default) or Kafka."""

from __future__ import annotations

from pgcarry.changelog.base import ChangeLog, LogSummary
from pgcarry.schemas.config import LogConfig


def open_log(cfg: LogConfig, *, slot: str, create: bool = False, readonly: bool = False) -> ChangeLog:
    """Open the configured backend. `create` makes a new log (only `start` does that)."""
    if cfg.backend == "kafka":
        from pgcarry.changelog.kafka import KafkaLog  # aiokafka is only imported when used

        assert cfg.kafka is not None
        return KafkaLog(cfg.kafka, slot=slot, create=create, readonly=readonly)
    from pgcarry.changelog.sqlite import SQLiteLog

    return SQLiteLog(cfg.path, create=create, readonly=readonly)


__all__ = ["ChangeLog", "LogSummary", "open_log"]
