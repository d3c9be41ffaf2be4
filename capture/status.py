"""What `status` reports: the slot as the source sees it, and the log's counts."""

from __future__ import annotations

from typing import Any

import psycopg

from pgcarry.changelog import ChangeLog

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


def status(changelog: ChangeLog, dsn: str | None, slot: str) -> dict[str, Any]:
    summary = changelog.summary()
    manifest = changelog.read_manifest()
    out: dict[str, Any] = {
        "manifest": None if manifest is None else {
            "slot": manifest.slot, "consistent_point": manifest.consistent_point,
            "created_at": manifest.created_at, "database": manifest.database,
            "tables": len(manifest.tables), "copy_target": manifest.copy_target,
        },
        "log": {
            "size_bytes": changelog.size_bytes(),
            "transactions": summary.transactions,
            "first_commit_time": summary.first_commit_time,
            "last_commit_time": summary.last_commit_time,
            "last_commit_lsn": str(summary.last_commit_lsn) if summary.last_commit_lsn else None,
            "holes": [{"commit_lsn": str(lsn), "read": seen, "n": n} for lsn, seen, n in summary.holes],
        },
        "daemon": {"running": False, "pid": None},
        "tables": dict(sorted(summary.tables.items())),
        "warnings": [],
    }
    recorded = changelog.get_state("slot_lost")
    out["incomplete"] = recorded
    if recorded:
        out["warnings"].append(
            f"LOG INCOMPLETE: slot {recorded['slot']} was lost ({recorded['reason']}); the log ends at "
            f"{recorded.get('last_lsn') or 'its last position'} -- replay and cutover refuse; take a new T0")
    for lsn, seen, n in summary.holes:
        out["warnings"].append(f"INCOMPLETE COPY: the transaction committed at {lsn} has {seen} of its {n} "
                               "changes in the log; it is not read until capture re-sends it whole")
    failed = changelog.get_state("capture_error")
    if failed:
        out["warnings"].append(f"CAPTURE STOPPED: {failed['error']}")
    writer = changelog.active_writer()
    if writer is not None:
        out["daemon"] = {"running": True, "pid": writer["pid"], "host": writer["host"]}
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
