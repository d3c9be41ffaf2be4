"""What `status` reports: the slot as the source sees it, and the log's counts."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgcarry.capture import forecast as fc
from pgcarry.changelog import ChangeLog
from pgcarry.changelog.integrity import CAPTURE_STOPPED, LEARNED_PARTITIONS, unsafe_lines
from pgcarry.schemas.config import DEFAULT_SLOT_WARNING_HOURS
from pgcarry.schemas.lsn import Lsn
from pgcarry.errors import LogError

_SLOT = """
SELECT active, active_pid, wal_status, confirmed_flush_lsn::text, restart_lsn::text,
       pg_current_wal_lsn()::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, safe_wal_size
FROM pg_replication_slots WHERE slot_name = %s
"""


def slot_state(dsn: str, slot: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(_SLOT, (slot,)).fetchone()
        if row is None:
            current = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            return {"name": slot, "exists": False, "current_lsn": current[0] if current else None}
    active, pid, wal_status, confirmed, restart, current, lag, held, safe = row
    return {
        "name": slot, "exists": True, "active": active, "active_pid": pid,
        "wal_status": wal_status, "confirmed_flush_lsn": confirmed, "restart_lsn": restart,
        "current_lsn": current, "lag_bytes": lag, "wal_held_bytes": held,
        "safe_wal_bytes": safe, "lost": wal_status == "lost",
    }


def slot_forecast(changelog: ChangeLog, dsn: str, s: dict[str, Any], warning_hours: float
                  ) -> dict[str, Any]:
    """safe_wal_size, the WAL rate (the daemon's samples over the last hour, else the server's
    average since its statistics were reset) and the seconds left before invalidation."""
    now, lsn = time.time(), Lsn.parse(s["current_lsn"]).value
    rate = fc.WalSamples.from_state(changelog.get_state(fc.SAMPLES_KEY)).rate(now, lsn)
    out: dict[str, Any] = {"safe_wal_bytes": s["safe_wal_bytes"], "warning_seconds": warning_hours * 3600}
    if rate is not None:
        out.update(wal_rate_bytes_per_second=round(rate[0], 1),
                   rate_source=f"capture samples over the last {fc.human_seconds(rate[1])}")
    elif s["safe_wal_bytes"] is not None:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            avg = fc.average_rate(conn)
        if avg is not None:
            out.update(wal_rate_bytes_per_second=round(avg[0], 1),
                       rate_source=f"the server's average since {avg[1]} (pg_stat_wal)")
    seconds = fc.estimate(s["safe_wal_bytes"], out.get("wal_rate_bytes_per_second"))
    out["invalidation_seconds"] = None if seconds is None else round(seconds, 1)
    out["at_risk"] = seconds is not None and seconds < out["warning_seconds"]
    return out


def _at_risk(slot: str, f: dict[str, Any]) -> str:
    fix = "keep `pgcarry capture` running, cut over sooner, or raise max_slot_wal_keep_size"
    if f["safe_wal_bytes"] <= 0:
        return (f"SLOT AT RISK: slot {slot} holds back more WAL than max_slot_wal_keep_size allows; "
                f"the next checkpoint invalidates it -- {fix}")
    return (f"SLOT AT RISK: at {fc.human_bytes(f['wal_rate_bytes_per_second'])}/s of WAL "
            f"({f['rate_source']}) the source invalidates slot {slot} in "
            f"{fc.human_seconds(f['invalidation_seconds'])} unless capture keeps it advancing "
            f"(safe_wal_size {fc.human_bytes(f['safe_wal_bytes'])}) -- {fix}")


def _storage(changelog: ChangeLog, changes: int) -> dict[str, Any]:
    """Bytes on disk, per change, and how much smaller than the uncompressed changes."""
    size, raw = changelog.size_bytes(), changelog.raw_bytes()
    return {
        "size_bytes": size, "changes": changes,
        "bytes_per_change": round(size / changes, 1) if changes else None,
        "uncompressed_bytes": raw,
        "compression_ratio": round(raw / size, 2) if raw and size else None,
    }


def status(changelog: ChangeLog, dsn: str | None, slot: str,
           warning_hours: float = DEFAULT_SLOT_WARNING_HOURS) -> dict[str, Any]:
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
            "holes": [{"commit_lsn": str(lsn), "read": seen, "n": n} for lsn, seen, n in summary.holes],
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
    stopped = out["capture_stopped"] = changelog.get_state(CAPTURE_STOPPED)
    if stopped:
        out["warnings"].append(
            f"CAPTURE STOPPED at LSN {stopped['lsn']} ({stopped.get('table') or 'table unknown'}): "
            f"{stopped['message']} -- the slot cannot stream past this change; replay and cutover refuse")
    out["unsafe"] = unsafe_lines(changelog)
    out["warnings"] += [f"NOT REPLAYABLE EXACTLY: {line} -- replay refuses this table" for line in out["unsafe"]]
    out["partitions_learned"] = changelog.get_state(LEARNED_PARTITIONS) or {}
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
    elif s["exists"]:
        s["forecast"] = slot_forecast(changelog, dsn, s, warning_hours)
        if s["forecast"]["at_risk"]:
            out["warnings"].append(_at_risk(slot, s["forecast"]))
    return out
