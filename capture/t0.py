"""T0: preflight, create the slot with an exported snapshot, copy with that very snapshot, mask,
and write the manifest. The creating connection stays idle until the copy is done, so the copy and
the stream meet at exactly the slot's consistent point.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

import psycopg
from psycopg2 import sql as sql2

from pgcarry import progress as prog
from pgcarry.capture import copy as copy_mod
from pgcarry.capture import forecast, mask_plan, preflight, replication
from pgcarry.capture.mask import MaskSpec, salt_check
from pgcarry.capture.catalog import Relation
from pgcarry.changelog import ChangeLog
from pgcarry.errors import LogError
from pgcarry.schemas.config import Config
from pgcarry.schemas.dsn import safe_dsn
from pgcarry.schemas.manifest import Manifest

log = logging.getLogger(__name__)


def _create_slot(repl_conn: object, slot: str) -> tuple[str, str]:
    cur = repl_conn.cursor()  # type: ignore[attr-defined]
    cur.execute(
        sql2.SQL("CREATE_REPLICATION_SLOT {} LOGICAL wal2json (SNAPSHOT 'export')").format(
            sql2.Identifier(slot)
        )
    )
    _name, consistent_point, snapshot, _plugin = cur.fetchone()
    return consistent_point, snapshot


def _drop_slot(dsn: str, slot: str) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
    except psycopg.Error as e:  # best effort: report, the original error matters more
        log.warning("could not drop slot %s after a failed start: %s", slot, e)


def start(
    cfg: Config,
    open_log: Callable[[], ChangeLog],
    *,
    copy_to: str | None = None,
    jobs: int = 2,
    set_replica_identity: bool = False,
    hold: Callable[[str], None] | None = None,
    progress: prog.Progress = prog.NULL,
    warn: Callable[[str], None] = log.warning,
) -> Manifest:
    """Run T0 and return the manifest written to the log `open_log()` opens (after preflight,
    so a refusal creates nothing). `hold(snapshot)` (for --snapshot-only) is called while the
    snapshot is valid and returns once the user's dump has finished. `warn` hears, before the
    slot exists, what the source's max_slot_wal_keep_size means for the capture."""
    slot, dsn = cfg.source.slot, cfg.source.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        rels, as_text = preflight.check(
            conn, slot, cfg.capture, set_replica_identity=set_replica_identity,
            more=lambda rels: mask_plan.check(conn, cfg.mask, rels, cfg.salt))
        warning = forecast.start_warning(conn)
        if warning:
            warn(warning)
        sysid, dbname = conn.execute(
            "SELECT system_identifier::text, current_database() FROM pg_control_system()"
        ).fetchone()  # type: ignore[misc]
    with open_log() as changelog:
        if changelog.read_manifest() is not None:
            raise LogError(
                "the change log already holds a manifest (a capture was started before)",
                hint="use that capture, or `pgcarry drop --yes` and remove the log to start over",
            )
        return _t0(cfg, changelog, rels, as_text, sysid, dbname, copy_to, jobs, hold, progress)


def _t0(
    cfg: Config, changelog: ChangeLog, rels: list[Relation], as_text: bool, sysid: str, dbname: str,
    copy_to: str | None, jobs: int, hold: Callable[[str], None] | None,
    progress: prog.Progress,
) -> Manifest:
    slot, dsn = cfg.source.slot, cfg.source.dsn
    # every schema holding a partitioned table or a partition of one: streamed whole, copied whole
    wild = {s for r in rels if r.info.partitioned for s in [r.info.schema_name] + [p.schema for p in r.partitions]}
    options = replication.plugin_options(((r.info.schema_name, r.info.name) for r in rels), wild,
                                         numbers_as_text=as_text)
    repl = replication.connect(dsn)
    try:
        consistent_point, snapshot = _create_slot(repl, slot)
        progress.note(f"slot {slot} created at {consistent_point}, snapshot {snapshot}")
        infos = [r.info for r in rels]
        try:
            if copy_to:
                progress.note(f"copying {len(rels)} tables to {safe_dsn(copy_to)} with {jobs} jobs")
                copy_mod.copy(
                    dsn, copy_to, snapshot, {r.info.schema_name for r in rels} | wild, jobs,
                    lambda: progress.note(f"masked {copy_mod.mask(copy_to, infos, cfg.salt)} columns"),
                    progress)
            elif hold is not None:
                hold(snapshot)
            for info in infos:  # without a copy pgcarry masked nothing: nothing to restore later
                info.masks = info.masks if copy_to else []
                info.masked_columns = [m.column for m in info.masks]
            tables = {i.qualified: i for i in infos}
            manifest = Manifest(
                slot=slot,
                plugin_options=options,
                consistent_point=consistent_point,
                snapshot=snapshot,
                created_at=datetime.now(timezone.utc).isoformat(),
                system_identifier=sysid,
                database=dbname,
                tables=tables,
                copy_target=safe_dsn(copy_to) if copy_to else None,
                mask_salt_check=salt_check(cfg.salt) if any(
                    MaskSpec.of(m.kind, m.options).salted for i in infos for m in i.masks) else None,
            )
            changelog.write_manifest(manifest)
        except BaseException:
            repl.close()
            _drop_slot(dsn, slot)
            raise
    finally:
        repl.close()
    return manifest
