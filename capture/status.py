"""What `status` reports: the slot as the source sees it, and the log's counts."""

from __future__ import annotations

from typing import Any

import psycopg

from pgcarry.changelog import ChangeLog
from pgcarry.errors import LogError

_SLOT = """
SELECT active, active_pid, wal_status, confirmed_flush_lsn::text, restart_lsn::text,
       pg_current_wal_lsn()::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = %s
"""


def slot_state(dsn: str, slot: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(_SLOT, (slot,)).fetchone()
        if row is None:
            current = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            return {"name": slot, "exists": False, "current_lsn": current[0] if current else None}
    active, pid, wal_status, confirmed, restart, current, lag, held = row
    return {
        "name": slot, "exists": True, "active": active, "active_pid": pid,
        "wal_status": wal_status, "confirmed_flush_lsn": confirmed, "restart_lsn": restart,
        "current_lsn": current, "lag_bytes": lag, "wal_held_bytes": held,
        "lost": wal_status == "lost",
    }


def _storage(changelog: ChangeLog, changes: int) -> dict[str, Any]:
    """Bytes on disk, per change, and how much smaller than the uncompressed changes."""
    size, raw = changelog.size_bytes(), changelog.raw_bytes()
    return {
        "size_bytes": size, "changes": changes,
        "bytes_per_change": round(size / changes, 1) if changes else None,
        "uncompressed_bytes": raw,
        "compression_ratio": round(raw / size, 2) if raw and size else None,
    }


def status(changelog: ChangeLog, dsn: str | None, slot: str) -> dict[str, Any]:
    try:
        changelog.check_integrity()
        damaged = None
    except LogError as e:
        damaged = e.message
    summary = changelog.summary()
    manifest = changelog.read_manifest()
    out: dict[str, Any] = {
        "manifest": None if manifest is None else {
            "slot": manifest.slot, "consistent_point": manifest.consistent_point,
            "created_at": manifest.created_at, "database": manifest.database,
            "tables": len(manifest.tables), "copy_target": manifest.copy_target,
        },
        "log": {
            **_storage(changelog, sum(sum(c.values()) for c in summary.tables.values())),
            "transactions": summary.transactions,
            "first_commit_time": summary.first_commit_time,
            "last_commit_time": summary.last_commit_time,
            "last_commit_lsn": str(summary.last_commit_lsn) if summary.last_commit_lsn else None,
        },
        "daemon": {"running": False, "pid": None},
        "tables": dict(sorted(summary.tables.items())),
        "warnings": [],
        "damaged": damaged,
    }
    if damaged:
        out["warnings"].append(f"LOG DAMAGED: {damaged} -- replay, rehearse and cutover refuse it")
    recorded = changelog.get_state("slot_lost")
    out["incomplete"] = recorded
    if recorded:
        out["warnings"].append(
            f"LOG INCOMPLETE: slot {recorded['slot']} was lost ({recorded['reason']}); the log ends at "
            f"{recorded.get('last_lsn') or 'its last position'} -- replay and cutover refuse; take a new T0")
    pid = changelog.lock().held_by_other()
    if pid is not None:
        out["daemon"] = {"running": True, "pid": pid}
    if manifest is not None:
        for rel in manifest.tables:
            out["tables"].setdefault(rel, {"insert": 0, "update": 0, "delete": 0, "truncate": 0})
    if dsn is None:
        out["slot"] = None
        return out
    try:
        out["slot"] = slot_state(dsn, slot)
    except psycopg.Error as e:
        out["slot"] = None
        out["warnings"].append(f"source unreachable: {type(e).__name__}")
        return out
    s = out["slot"]
    if s.get("lost"):
        out["warnings"].append(
            f"SLOT LOST: {slot} was invalidated (wal_status = lost); the log is incomplete after "
            f"{s['confirmed_flush_lsn']} -- replay and cutover will refuse; take a new T0"
        )
    elif not s["exists"] and manifest is not None and not changelog.get_state("slot_dropped"):
        out["warnings"].append(f"SLOT MISSING: {slot} does not exist on the source; capture cannot continue")
    return out
