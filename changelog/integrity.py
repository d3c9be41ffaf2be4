"""Whether a change log can be trusted to hold every change: it belongs to this slot and this
source, and its slot was never lost. replay, rehearse and cutover refuse an incomplete log unless
the user passes --allow-incomplete; the first verb that sees a loss records it in the log."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgcarry.changelog.base import ChangeLog
from pgcarry.errors import LogError, LogIncompleteError
from pgcarry.schemas.config import Config
from pgcarry.schemas.manifest import Manifest

SLOT_LOST = "slot_lost"
SLOT_DROPPED = "slot_dropped"
LEARNED_PARTITIONS = "partitions_learned"  # partitions capture met after T0 (capture/routing.py)
CAPTURE_STOPPED = "capture_stopped"  # a change the stream cannot carry (capture/failure.py)
UNSAFE = "unsafe"  # relation -> kind -> {lsn, detail}: what the log cannot replay exactly
NEW_T0 = ("take a new T0 (`pgcarry drop --yes`, a new log path, `pgcarry start`), or pass "
          "--allow-incomplete to replay what the log holds (changes after its last position are missing)")


def _dropped_by_us(log: ChangeLog) -> bool:
    cut = (log.get_state("cutover") or {}).get("phases") or {}
    return bool(log.get_state(SLOT_DROPPED)) or cut.get("drop-slot", {}).get("status") == "done"


def note_slot(log: ChangeLog, dsn: str, slot: str) -> dict[str, Any] | None:
    """Look at the slot on the source; record and return the loss when it is lost or gone."""
    from pgcarry.capture.status import slot_state

    s = slot_state(dsn, slot)
    if s["exists"] and not s["lost"]:
        return None
    if not s["exists"] and _dropped_by_us(log):
        return None
    lost = log.get_state(SLOT_LOST)
    if lost is None:
        lost = {"slot": slot, "reason": "wal_status = lost" if s["exists"] else "slot does not exist",
                "last_lsn": s.get("confirmed_flush_lsn"), "seen_at": time.time()}
        try:
            log.set_state(SLOT_LOST, lost)
        except LogError:
            pass  # opened read-only (Kafka): the source still says so next time
    return dict(lost)


def note_unsafe(log: ChangeLog, relation: str, kind: str, lsn: Any, detail: str) -> bool:
    """Record (durably, once per relation and kind: the first LSN) that the captured changes of
    `relation` cannot be replayed exactly. True when newly recorded."""
    unsafe = log.get_state(UNSAFE) or {}
    if kind in unsafe.get(relation, {}):
        return False
    unsafe.setdefault(relation, {})[kind] = {"lsn": str(lsn) if lsn else None, "detail": detail}
    log.set_state(UNSAFE, unsafe)
    return True


def unsafe_lines(log: ChangeLog) -> list[str]:
    """One line per recorded problem: relation, first LSN and what happened."""
    return [f"{rel}: {p['detail']} (first at LSN {p['lsn'] or '?'})"
            for rel, kinds in sorted((log.get_state(UNSAFE) or {}).items()) for p in kinds.values()]


def refuse_unsafe(cfg: Config, log: ChangeLog, *, allow_incomplete: bool = False) -> None:
    """Refuse a replay that would silently write a different result for a recorded relation
    (one not set `ignore = true` in [replay.tables])."""
    if allow_incomplete:
        return
    for rel, kinds in sorted((log.get_state(UNSAFE) or {}).items()):
        if cfg.replay.table(rel).ignore:
            continue
        kind, p = next(iter(kinds.items()))
        fix = {"identity": f"ALTER TABLE {rel} REPLICA IDENTITY FULL on production and take a new T0"}.get(
            kind, "take a new T0")
        raise LogIncompleteError(
            f"the change log cannot replay {rel} exactly: {p['detail']}", table=rel,
            lsn=p["lsn"], hint=f"{fix}; or set `ignore = true` in [replay.tables.\"{rel}\"] to "
            "replay the other tables (or --allow-incomplete to replay what the log holds)")


def _same_source(manifest: Manifest, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT system_identifier::text, current_database() "
                           "FROM pg_control_system()").fetchone()
    assert row is not None
    if (row[0], row[1]) != (manifest.system_identifier, manifest.database):
        raise LogError(
            f"the change log was taken from database {manifest.database!r} of system "
            f"{manifest.system_identifier}, but [source] is {row[1]!r} of system {row[0]}",
            hint="point --config at this log's own pgcarry.toml, or [log] path at this source's log")


def check(cfg: Config, log: ChangeLog, *, allow_incomplete: bool = False, source: bool = True
          ) -> Manifest:
    """The manifest, after refusing a log of another slot or source, or one whose slot was lost."""
    log.check_integrity()
    manifest = log.read_manifest()
    if manifest is None:
        raise LogError("the change log has no manifest", hint="run `pgcarry start` first")
    if manifest.slot != cfg.source.slot:
        raise LogError(f"the change log belongs to slot {manifest.slot!r}, not {cfg.source.slot!r}",
                       hint="use the config this log was started with")
    from pgcarry.replay import policy_check  # the config's policies against what was captured

    policy_check.check(cfg, manifest, log=log)
    seen = None
    if source and cfg.source.dsn:
        try:
            _same_source(manifest, cfg.source.dsn)
            seen = note_slot(log, cfg.source.dsn, cfg.source.slot)
        except psycopg.OperationalError:
            pass  # source unreachable: the log's own record decides
    lost = log.get_state(SLOT_LOST) or seen
    if lost and not allow_incomplete:
        raise LogIncompleteError(
            f"the change log is incomplete: replication slot {lost['slot']!r} was lost "
            f"({lost['reason']}); changes after {lost.get('last_lsn') or 'its last position'} "
            "were never captured", hint=NEW_T0)
    stopped = log.get_state(CAPTURE_STOPPED)
    if stopped and not allow_incomplete:
        raise LogIncompleteError(
            f"the change log is incomplete: capture stopped at LSN {stopped['lsn']} ({stopped['message']})",
            table=stopped.get("table"), hint=NEW_T0)
    refuse_unsafe(cfg, log, allow_incomplete=allow_incomplete)
    return manifest
