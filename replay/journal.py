"""The replay journal and pre-replay images, in the target's `pgcarry` schema.

A journal row (slot, LSN range, counts, conflicts, policies) is written in the same transaction as
the replay it records — the alembic version-table idea: the position moves with the work. Before
touching a row, replay copies it into ``pgcarry.<before table>`` so verify can compute
expectations and a person can inspect or undo a decision.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgcarry.schemas.lsn import Lsn

SCHEMA = "pgcarry"
JOURNAL = "replay_journal"
BEFORE_INDEX = "replay_before_tables"
RUN_COLUMN = "_pgcarry_run"
KEYLESS_COUNTS = "replay_keyless_counts"

_DDL = [
    "CREATE SCHEMA IF NOT EXISTS pgcarry",
    """CREATE TABLE IF NOT EXISTS pgcarry.replay_journal (
        id bigserial PRIMARY KEY,
        slot text NOT NULL,
        mode text NOT NULL,
        first_lsn pg_lsn,
        last_lsn pg_lsn NOT NULL,
        transactions bigint NOT NULL,
        changes bigint NOT NULL,
        counts jsonb NOT NULL,
        conflicts jsonb NOT NULL,
        policy jsonb NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        duration_ms bigint
    )""",
    """CREATE TABLE IF NOT EXISTS pgcarry.replay_before_tables (
        relation text PRIMARY KEY,
        before_table text NOT NULL
    )""",
    # production's sequence positions replay used, for verify (journals of older versions lack it)
    "ALTER TABLE pgcarry.replay_journal ADD COLUMN IF NOT EXISTS sequences jsonb",
    # a relation without a key: per row image (its text), the target rows equal to it before a run
    """CREATE TABLE IF NOT EXISTS pgcarry.replay_keyless_counts (
        relation text NOT NULL,
        run bigint NOT NULL,
        image text NOT NULL,
        n bigint NOT NULL
    )""",
]


def exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('pgcarry.replay_journal') IS NOT NULL").fetchone()
    return bool(row and row[0])


def ensure(conn: psycopg.Connection) -> None:
    """Create the schema and tables (inside the caller's transaction) and lock out other replays."""
    for stmt in _DDL:
        conn.execute(stmt)
    conn.execute("LOCK TABLE pgcarry.replay_journal IN SHARE ROW EXCLUSIVE MODE")


def last_lsn(conn: psycopg.Connection, slot: str) -> Lsn | None:
    if not exists(conn):
        return None
    row = conn.execute(
        "SELECT max(last_lsn)::text FROM pgcarry.replay_journal WHERE slot = %s", (slot,)
    ).fetchone()
    return Lsn.parse(row[0]) if row and row[0] else None


def next_run(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT nextval(pg_get_serial_sequence('pgcarry.replay_journal', 'id'))"
                       ).fetchone()
    assert row is not None
    return int(row[0])


def write(conn: psycopg.Connection, run: int, slot: str, mode: str, first: Lsn | None, last: Lsn,
          transactions: int, changes: int, counts: dict[str, Any], conflicts: list[Any],
          policy: dict[str, Any], duration_ms: int, sequences: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO pgcarry.replay_journal (id, slot, mode, first_lsn, last_lsn, transactions, "
        "changes, counts, conflicts, policy, duration_ms, sequences) "
        "VALUES (%s, %s, %s, %s::pg_lsn, %s::pg_lsn, %s, %s, %s, %s, %s, %s, %s)",
        (run, slot, mode, str(first) if first else None, str(last), transactions, changes,
         Jsonb(counts), Jsonb(conflicts), Jsonb(policy), duration_ms, Jsonb(sequences)),
    )


def runs(conn: psycopg.Connection, slot: str) -> list[dict[str, Any]]:
    """Every journal row of `slot`, oldest first."""
    if not exists(conn):
        return []
    cur = conn.execute(
        "SELECT id, mode, first_lsn::text, last_lsn::text, transactions, changes, counts, "
        "conflicts, policy, applied_at, to_jsonb(j) -> 'sequences' AS sequences "
        "FROM pgcarry.replay_journal j WHERE slot = %s ORDER BY id", (slot,))
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r)) for r in cur]


def _before_name(relation: str) -> str:
    name = "before_" + relation.replace(".", "__")
    if len(name) > 63:
        name = name[:50] + "_" + hashlib.sha1(relation.encode()).hexdigest()[:12]
    return name


def before_table(conn: psycopg.Connection, relation: str, target: sql.Composable) -> sql.Identifier:
    """The pre-image table of `relation` (created on first use with the target's columns)."""
    row = conn.execute("SELECT before_table FROM pgcarry.replay_before_tables WHERE relation = %s",
                       (relation,)).fetchone()
    if row:
        return sql.Identifier(SCHEMA, row[0])
    name = _before_name(relation)
    ident = sql.Identifier(SCHEMA, name)
    conn.execute(sql.SQL("CREATE TABLE {} AS SELECT t.*, 0::bigint AS {} FROM {} t WITH NO DATA")
                 .format(ident, sql.Identifier(RUN_COLUMN), target))
    conn.execute("INSERT INTO pgcarry.replay_before_tables VALUES (%s, %s)", (relation, name))
    return ident


def find_before_table(conn: psycopg.Connection, relation: str) -> sql.Identifier | None:
    if not exists(conn):
        return None
    row = conn.execute("SELECT before_table FROM pgcarry.replay_before_tables WHERE relation = %s",
                       (relation,)).fetchone()
    return sql.Identifier(SCHEMA, row[0]) if row else None


def before_columns(conn: psycopg.Connection, ident: sql.Identifier) -> list[str]:
    schema, name = ident._obj  # type: ignore[attr-defined]
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (schema, name))]
