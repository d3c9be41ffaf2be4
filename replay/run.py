"""`replay`: read the log past the journal's position, plan, and apply in ONE target transaction.

Steps: journal lock → fold → plan (map, order, drift) → stage (COPY) → detect conflicts → (dry run
stops here) → pre-images → truncates, deletes children-first, updates and inserts parents-first
(or statement by statement in mode `txn`) → foreign-key anti-joins → sequences → journal → commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgcarry import progress as prog
from pgcarry.changelog import integrity
from pgcarry.changelog.base import ChangeLog
from pgcarry.errors import ConflictError, ReplayError
from pgcarry.replay import (apply, catalog, journal, keyless, reader, sequences, session, stage,
                            triggers, txn)
from pgcarry.replay import plan as plan_mod
from pgcarry.replay.detect import detect, insert_conflicts, truncates
from pgcarry.replay.fold import Folder, TableFold
from pgcarry.replay.plan import Drift, Plan
from pgcarry.replay.sequences import Production, ProductionSource
from pgcarry.replay.triggers import Trigger
from pgcarry.schemas.change import ACTION_NAMES, Transaction
from pgcarry.schemas.config import Config
from pgcarry.schemas.manifest import Manifest

@dataclass
class Report:
    status: str  # applied | nothing | dry-run
    mode: str
    slot: str
    plan: Plan | None = None
    applied: dict[str, dict[str, int]] = field(default_factory=dict)
    sequences: list[tuple[str, int]] = field(default_factory=list)  # moved: (sequence, last value)
    production: Production = field(default_factory=Production)  # its positions replay used
    triggers: list[Trigger] = field(default_factory=list)  # on the replayed tables
    fk_checked: int = 0
    run: int = 0  # the journal row's id
    after: str | None = None
    duration_ms: int = 0
    keyless: dict[str, dict[str, int]] = field(default_factory=dict)  # relation without a key:
    # its net counts

    def as_dict(self) -> dict[str, Any]:
        from pgcarry.replay.report import report_dict

        return report_dict(self)


def _log_items(log: ChangeLog, after: Any, keep: bool, plan_stats: dict[str, Any],
               task: prog.Task, keys: dict[str, list[str]]) -> tuple[Folder, list[Transaction]]:
    folder = Folder(keys=keys)
    kept: list[Transaction] = []
    for t in log.transactions(after):
        changes = list(t.changes)
        for ch in changes:
            folder.add(ch)
        plan_stats["first"] = plan_stats.get("first") or t.commit_lsn
        plan_stats["last"] = t.commit_lsn
        plan_stats["transactions"] = plan_stats.get("transactions", 0) + 1
        plan_stats["changes"] = plan_stats.get("changes", 0) + len(changes)
        task.update(plan_stats["changes"])
        if keep:
            t.changes = changes
            kept.append(t)
    return folder, kept


def replica_role(conn: psycopg.Connection) -> None:
    try:
        conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        raise ReplayError(
            "the target role may not set session_replication_role",
            hint="replay as a superuser, or (PostgreSQL 15+) GRANT SET ON PARAMETER "
                 "session_replication_role TO <role>") from None


def _skipped(plan: Plan, rel: str) -> dict[str, int]:
    out = {"insert": 0, "update": 0, "delete": 0}
    for c in plan.conflicts:
        if c.table != rel or c.decision not in ("skip", "keep target row"):
            continue
        out[{"insert-exists": "insert", "update-missing": "update", "delete-missing": "delete"}[c.kind]] += 1
    return out


def _counts(plan: Plan, applied: dict[str, dict[str, int]]) -> dict[str, Any]:
    out = {}
    for rel, tp in plan.tables.items():
        out[rel] = {
            "source": tp.source,
            "captured": {ACTION_NAMES[a]: n for a, n in sorted(tp.fold.captured.items())},
            "net": tp.counts(), "applied": applied.get(rel, {}), "skipped": _skipped(plan, rel),
        }
    return out


def _insert(conn: psycopg.Connection, st: stage.Stage, plan: Plan) -> int:
    """Held inserts go straight into the target by COPY. If that fails (a key that exists, a
    NOT NULL column wal2json sent null), it is undone and the inserts are staged and checked
    like any other: the conflict is reported as it would have been from staging."""
    if st.held:
        try:
            with conn.transaction():
                return stage.copy_held(conn, st)
        except psycopg.Error:
            stage.copy_rows(conn, st, st.held)
            st.held = []
            plan.conflicts += insert_conflicts(conn, st)
            _fail_on_conflicts(plan)
    return apply.inserts(conn, st)


def _copy_checks_key(tp: plan_mod.TablePlan) -> bool:
    """Whether a COPY straight into the target fails on an existing key, as insert-exists = fail
    wants: the replay key is a key of the target checked per row (not deferrable)."""
    t = tp.target
    return (tp.rules.insert_exists == "fail" and t is not None and bool(tp.key)
            and t.checks_per_row(tp.key))


def _stage(conn: psycopg.Connection, p: Plan, mode: str, dry_run: bool, progress: prog.Progress
           ) -> list[stage.Stage]:
    """Stage every keyed relation and ask the target for its conflicts; a relation without a
    key has only its TRUNCATE (and, in a dry run, its predicted missing rows) to report."""
    stages = []
    tables = p.ordered()
    with progress.task("replay: stage", total=sum(len(tp.fold.rows) for tp in tables)) as task:
        for i, tp in enumerate(tables):
            if tp.keyless:
                p.conflicts += truncates(tp) + (keyless.predict(conn, tp) if dry_run else [])
                continue
            hold = mode == "net" and not dry_run and _copy_checks_key(tp)
            before = task.done
            st = stage.load(conn, tp, i, task, hold_inserts=hold)
            task.update(before + len(tp.fold.rows))
            p.conflicts += detect(conn, st)
            stages.append(st)
    return stages


def _apply_net(conn: psycopg.Connection, stages: list[stage.Stage], plan: Plan,
               progress: prog.Progress) -> dict[str, dict[str, int]]:
    applied = {st.tp.relation: {"insert": 0, "update": 0, "delete": 0, "reinsert": 0} for st in stages}
    keyless_tps = [tp for tp in plan.ordered() if tp.keyless]
    total = sum(st.rows + len(st.held) for st in stages) + sum(
        len(tp.fold.ops) + len(tp.fold.plain) for tp in keyless_tps)
    with progress.task("replay: apply", total=total) as task:
        for st in reversed(stages):
            applied[st.tp.relation]["delete"] = _step(apply.deletes, conn, st, "delete", task)
        for st in stages:
            a = applied[st.tp.relation]
            a["update"] = _step(apply.updates, conn, st, "update", task)
            if st.tp.rules.update_missing == "reinsert":
                a["reinsert"] = _step(apply.reinserts, conn, st, "reinsert", task)
            a["insert"] = _step(lambda c, s: _insert(c, s, plan), conn, st, "insert", task)
        for tp in keyless_tps:
            with _failing("replay", tp.relation):
                rows = keyless.apply(conn, tp)
            task.advance(len(tp.fold.ops) + len(tp.fold.plain))
            applied[tp.relation] = rows.applied
            plan.conflicts += rows.conflicts
    return applied


@contextmanager
def _failing(what: str, table: str) -> Iterator[None]:
    """A database error as a one-line ReplayError naming the step and the table."""
    try:
        yield
    except psycopg.Error as e:
        raise ReplayError(f"{what} failed: {e.diag.message_primary or e}", table=table,
                          detail=e.diag.message_detail,
                          hint="nothing was changed; fix the target or the policy and replay again"
                          ) from None


def _step(fn: Callable[[psycopg.Connection, stage.Stage], int], conn: psycopg.Connection,
          st: stage.Stage, what: str, task: prog.Task) -> int:
    with _failing(what, st.tp.relation):
        n = fn(conn, st)
    task.advance(n)
    return n


def _truncate(conn: psycopg.Connection, plan: Plan, run: int, execute: bool) -> list[str]:
    """Keep pre-images of captured-TRUNCATE tables; in mode `net` truncate them up front."""
    tables = [tp.target for tp in plan.ordered() if tp.fold.truncated_at and tp.target]
    for t in tables:
        apply.snapshot_truncated(conn, t, run)
    if tables and execute:
        conn.execute(sql.SQL("TRUNCATE {}").format(
            sql.SQL(", ").join(sql.Identifier(*t.ident) for t in tables)))
    return [t.relation for t in tables]


def _fail_on_conflicts(plan: Plan) -> None:
    fails = [c for c in plan.conflicts if c.decision == "fail"]
    if not fails:
        return
    c = fails[0]
    more = f"; {len(fails) - 1} more in --dry-run" if len(fails) > 1 else ""
    rule = {"insert-exists": "insert-exists = \"source-wins\" or \"target-wins\"",
            "update-missing": "update-missing = \"skip\" or \"reinsert\"",
            "delete-missing": "delete-missing = \"skip\"", "truncate": "truncate = \"apply\""}.get(c.kind)
    if rule is None:  # lost-value: production wrote NaN/±Infinity, which the log holds as null
        raise ConflictError(
            f"column {c.column} is null in the log but NOT NULL in the target: production wrote NaN "
            f"or Infinity, which wal2json sends as null{more}", table=c.table, key=c.label, lsn=c.lsn,
            hint="nothing was changed; on production set a finite value (it is captured), or drop "
                 "NOT NULL on the target and fix the row after replay")
    raise ConflictError(f"{c.kind} conflict{more}", table=c.table, key=c.label, lsn=c.lsn,
                        hint=f"nothing was changed; set {rule} for the table in [replay.tables]")


def _production(conn: psycopg.Connection, p: Plan, source: ProductionSource | None
                ) -> tuple[list[sequences.Used], Production]:
    """The sequences the replayed tables use, and production's positions of them; a sequence
    the source role may not read blocks the replay (its ids could be handed out twice)."""
    seqs = sequences.used(conn, [tp.target.oid for tp in p.ordered() if tp.target])
    if not seqs:
        return seqs, Production()
    prod = source([u.relation for u in seqs]) if source else Production(
        unknown="production's positions were not asked for (no source given)")
    for name in sequences.refuse_unreadable(seqs, prod):
        p.drift.append(Drift("sequence-unreadable", name, None,
                             "production's position of this sequence cannot be read by the source role",
                             f"GRANT SELECT ON SEQUENCE {name} TO <source role>", blocking=True))
    return seqs, prod


def _changes_left(conn: psycopg.Connection, log: ChangeLog, slot: str) -> int:
    """The changes past the journal's position: all the log holds less what the journal replayed."""
    total = prog.total_of(log.summary().tables)
    if not journal.exists(conn):
        return total
    row = conn.execute("SELECT coalesce(sum(changes), 0) FROM pgcarry.replay_journal WHERE slot = %s",
                       (slot,)).fetchone()
    return max(total - int(row[0] if row else 0), 0)


def _read(conn: psycopg.Connection, cfg: Config, log: ChangeLog, after: Any, mode: str,
          stats: dict[str, Any], progress: prog.Progress, keys: dict[str, list[str]]
          ) -> tuple[dict[str, TableFold], list[Transaction]]:
    with progress.task("replay: read the log", unit="changes") as task:
        if task.shown:
            task.update(0, _changes_left(conn, log, cfg.source.slot))
        if mode == "txn":
            folder, txns = _log_items(log, after, True, stats, task, keys)
            return folder.tables, txns
        return reader.read(log.raw_changes(after), stats, task, keys), []


def _open(conn: psycopg.Connection, cfg: Config, dry_run: bool) -> None:
    # the fold's sorts stay in memory; temp tables (before any is touched) stay in local buffers
    conn.execute("SET LOCAL work_mem = '256MB'")
    conn.execute("SET LOCAL temp_buffers = '256MB'")
    triggers.check(conn, cfg.replay)
    if not dry_run:
        journal.ensure(conn)
        replica_role(conn)


def replay(cfg: Config, log: ChangeLog, to: str, *, mode: str | None = None, dry_run: bool = False,
           progress: prog.Progress = prog.NULL, production: ProductionSource | None = None,
           allow_incomplete: bool = False) -> Report:
    """Apply the captured changes past the journal's position to the target database `to`;
    `progress` sees the reading, staging and applying as tasks; `production` tells production's
    sequence positions (see replay/sequences.py)."""
    started = time.monotonic()
    integrity.refuse_unsafe(cfg, log, allow_incomplete=allow_incomplete)
    mode = mode or cfg.replay.mode
    say = progress.note
    rep = Report("dry-run" if dry_run else "applied", mode, cfg.source.slot)
    with session.connect(to) as conn:
        _open(conn, cfg, dry_run)
        after = journal.last_lsn(conn, cfg.source.slot)
        rep.after = str(after) if after else None
        stats: dict[str, Any] = {}
        manifest = log.read_manifest()
        keys = manifest.identity_keys() if manifest else {}
        folds, txns = _read(conn, cfg, log, after, mode, stats, progress, keys)
        if not stats.get("transactions"):
            conn.rollback()
            rep.status = "nothing"
            return rep
        say(f"read {stats['changes']} changes in {stats['transactions']} transactions")
        rep.plan = p = _plan(conn, cfg, manifest, folds)
        p.first_lsn, p.last_lsn = stats["first"], stats["last"]
        p.transactions, p.changes = stats["transactions"], stats["changes"]
        rep.keyless = {tp.relation: tp.counts() for tp in p.ordered() if tp.keyless}
        rep.triggers = triggers.read(conn, {tp.relation: (tp.target.oid, tp.source)
                                            for tp in p.ordered() if tp.target}, cfg.replay, manifest)
        seqs, rep.production = _production(conn, p, production)
        if not dry_run:
            plan_mod.raise_blocking(p)
        stages = _stage(conn, p, mode, dry_run, progress)
        if dry_run:
            conn.rollback()
        else:
            _write(conn, rep, stages, txns, seqs, progress)
        rep.duration_ms = int((time.monotonic() - started) * 1000)
        if not dry_run:
            _journal(conn, cfg, rep, seqs)
            say("journal written; committing")
    return rep


def _write(conn: psycopg.Connection, rep: Report, stages: list[stage.Stage],
           txns: list[Transaction], seqs: list[sequences.Used], progress: prog.Progress) -> None:
    """Everything replay changes, after the conflict check: truncates, pre-images, the writes
    (named triggers firing), the foreign-key check, sequences."""
    p = rep.plan
    assert p is not None
    _fail_on_conflicts(p)
    rep.run = journal.next_run(conn)
    if p.order.deferred_cycles:
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
    switched = triggers.fire(conn, rep.triggers)
    truncated = _truncate(conn, p, rep.run, rep.mode == "net")
    for st in stages:
        if st.tp.relation not in truncated:
            apply.snapshot_before(conn, st, rep.run)
    for tp in p.ordered():
        if tp.keyless and tp.fold.ops and tp.relation not in truncated:
            keyless.snapshot(conn, tp, rep.run)
    if rep.mode == "txn":
        with progress.task("replay: apply", total=len(txns), unit="transactions") as task:
            rep.applied = txn.apply(conn, p, txns, task)
    else:
        rep.applied = _apply_net(conn, stages, p, progress)
    for rel in truncated:
        rep.applied.setdefault(rel, {})["truncate"] = 1
    rep.fk_checked = apply.check_foreign_keys(conn, p.fkeys, set(p.tables))
    progress.note(f"checked {rep.fk_checked} foreign keys")
    rep.sequences = sequences.advance(conn, seqs, rep.production)
    progress.note(f"advanced {len(rep.sequences)} sequences")
    triggers.restore(conn, switched)


def _journal(conn: psycopg.Connection, cfg: Config, rep: Report, seqs: list[sequences.Used]) -> None:
    p = rep.plan
    assert p is not None and p.last_lsn is not None
    journal.write(conn, rep.run, cfg.source.slot, rep.mode, p.first_lsn, p.last_lsn,
                  p.transactions, p.changes, _counts(p, rep.applied),
                  [c.as_dict() for c in p.conflicts],
                  cfg.replay.model_dump(mode="json", by_alias=True), rep.duration_ms,
                  {"production": {u.relation: rep.production.next.get(u.relation) for u in seqs},
                   "unknown": rep.production.unknown, "advanced": dict(rep.sequences)})


def _plan(conn: psycopg.Connection, cfg: Config, manifest: Manifest | None,
          folds: dict[str, TableFold]) -> Plan:
    rels = [cfg.replay.table(r).rename_to or r for r in folds]
    targets = catalog.read_tables(conn, rels)
    fkeys = catalog.read_foreign_keys(conn, list(targets.values()))
    return plan_mod.build(folds, targets, fkeys, cfg.replay, manifest)
