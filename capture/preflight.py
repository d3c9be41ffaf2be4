"""Preflight: refuse, before anything is created, every source state that would silently lose data.

Each problem names the fix (the SQL or setting to change). ``--set-replica-identity`` is the one
fix pgcarry applies itself, and only after every other check passed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgcarry.capture.catalog import Relation, relations
from pgcarry.errors import PreflightError
from pgcarry.schemas.change import NUMBERS_AS_TEXT
from pgcarry.schemas.config import CaptureConfig


@dataclass
class Problem:
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} -- fix: {self.fix}"


def _server_problems(conn: psycopg.Connection, slot: str) -> list[Problem]:
    out = []
    wal_level = conn.execute("SHOW wal_level").fetchone()[0]  # type: ignore[index]
    if wal_level != "logical":
        out.append(Problem(
            f"wal_level is {wal_level!r}, logical decoding needs 'logical'",
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        ))
    may = conn.execute(
        "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0]  # type: ignore[index]
    if not may:
        out.append(Problem(
            "the role has neither REPLICATION nor SUPERUSER",
            "ALTER ROLE <role> REPLICATION (or connect as a role that has it)",
        ))
    free_slots, exists = conn.execute(
        "SELECT current_setting('max_replication_slots')::int - count(*), "
        "       bool_or(slot_name = %s) FROM pg_replication_slots",
        (slot,),
    ).fetchone()  # type: ignore[misc]
    if exists:
        out.append(Problem(
            f"replication slot {slot!r} already exists",
            f"choose another [source] slot, or `pgcarry drop --yes` / "
            f"SELECT pg_drop_replication_slot('{slot}') if it is a leftover",
        ))
    elif free_slots <= 0:
        out.append(Problem(
            "no free replication slot (max_replication_slots are all used)",
            "drop an unused slot or raise max_replication_slots and restart PostgreSQL",
        ))
    free_senders = conn.execute(
        "SELECT current_setting('max_wal_senders')::int - count(*) FROM pg_stat_replication"
    ).fetchone()[0]  # type: ignore[index]
    if free_senders <= 0:
        out.append(Problem(
            "no free WAL sender (max_wal_senders are all busy)",
            "raise max_wal_senders and restart PostgreSQL",
        ))
    return out


def _plugin(conn: psycopg.Connection) -> tuple[Problem | None, bool]:
    """Loading wal2json is the only reliable test (a temporary slot, dropped at once); decoding
    with numeric-data-types-as-string tells whether it can send NaN/±Infinity (2.6+): an older
    one rejects the unknown option. Returns (a problem, numbers as text supported)."""
    probe = f"pgcarry_probe_{secrets.token_hex(4)}"
    try:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)", (probe,))
    except psycopg.Error as e:
        text = (e.diag.message_primary or str(e)).strip()
        if "wal2json" in text or "could not access file" in text:
            return Problem(
                f"the wal2json output plugin is not installed ({text})",
                "install it on the database server (Debian: apt-get install postgresql-15-wal2json)",
            ), False
        return Problem(f"cannot create a logical replication slot: {text}", "see the server log"), False
    try:
        conn.execute("SELECT count(*) FROM pg_logical_slot_peek_changes(%s, NULL, 1, "
                     "'format-version', '2', %s, '1')", (probe, NUMBERS_AS_TEXT))
        as_text = True
    except psycopg.Error:
        as_text = False  # the error also ended the temporary slot
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 "WHERE slot_name = %s", (probe,))
    return None, as_text


def _special_numbers(rels: list[Relation]) -> Problem | None:
    """Without numbers as text, NaN/±Infinity in a nullable real/double/numeric column would
    arrive as a NULL nobody can tell from a real one (a NOT NULL column: replay refuses it)."""
    cols = [f"{r.qualified}.{c.name}" for r in rels for c in r.info.columns
            if c.type.startswith(("real", "double precision", "numeric")) and not c.not_null
            and not c.generated]
    if not cols:
        return None
    more = f" (and {len(cols) - 3} more)" if len(cols) > 3 else ""
    return Problem(
        f"this wal2json (before 2.6) sends NaN and ±Infinity as null: in {', '.join(cols[:3])}{more} "
        "they would silently become NULL",
        "install wal2json 2.6 or later on the server (it sends them as text), or accept the loss "
        "with [capture] accept-nan-as-null = true")


def _not_capturable(rel: Relation) -> list[tuple[str, str]]:
    """(relation, why) for what lacks a key for UPDATE/DELETE: the table, or each leaf of it."""
    if rel.partitions:
        return [(p.qualified, f"{p.qualified} (partition of {rel.qualified}) has no primary key "
                 f"and REPLICA IDENTITY {p.replica_identity.upper()}")
                for p in rel.leaves if not p.capturable]
    if rel.capturable:
        return []
    return [(rel.qualified, f"{rel.qualified} has no primary key and REPLICA IDENTITY "
             f"{rel.info.replica_identity.upper()}")]


def _identity_targets(rel: Relation) -> list[tuple[str, str]]:
    """The relations `ALTER TABLE ... REPLICA IDENTITY FULL` must touch: a partitioned table's own
    setting governs none of its partitions, so every leaf not yet FULL (and the table itself)."""
    own = (rel.info.schema_name, rel.info.name)
    if not rel.partitions:
        return [own]
    return [own] + [(p.schema, p.name) for p in rel.leaves if p.replica_identity != "full"]


def table_problems(rels: list[Relation], capture: CaptureConfig, fix: bool = False
                   ) -> tuple[list[Problem], list[Relation]]:
    """Refusals for the captured relations, and the relations that only lack REPLICA IDENTITY FULL
    (with `fix`, a table without a primary key is one of those: FULL makes it capturable)."""
    out, need_full = [], []
    if not rels:
        out.append(Problem(
            f"no table matches [capture] tables = {capture.tables} (exclude = {capture.exclude})",
            "list the tables to capture as \"schema.table\" patterns in pgcarry.toml",
        ))
    for rel in rels:
        name = rel.qualified
        opted_out = capture.identity.get(name) == "default"
        missing = _not_capturable(rel)
        if missing and fix and not opted_out:
            need_full.append(rel)
        elif missing:
            out += [Problem(f"{why}: its UPDATEs and DELETEs would vanish from the stream",
                            f"ALTER TABLE {r} REPLICA IDENTITY FULL (or add a primary key)")
                    for r, why in missing]
        elif rel.info.replica_identity != "full" and not opted_out:
            need_full.append(rel)
    return out, need_full


def check(
    conn: psycopg.Connection, slot: str, capture: CaptureConfig, *, set_replica_identity: bool = False,
    more: Callable[[list[Relation]], list[Problem]] | None = None,
) -> tuple[list[Relation], bool]:
    """Run every check (and `more` on the captured relations: the masking rules); on success
    return the captured relations and whether wal2json sends numbers as text, else raise
    PreflightError."""
    problems = _server_problems(conn, slot)
    rels = relations(conn, capture)
    table_refusals, need_full = table_problems(rels, capture, set_replica_identity)
    problems += table_refusals
    if more is not None:
        problems += more(rels)
    numbers_as_text = False
    if not problems:
        plugin, numbers_as_text = _plugin(conn)
        problems += [plugin] if plugin else []
        special = None if plugin or numbers_as_text or capture.accept_nan_as_null else _special_numbers(rels)
        problems += [special] if special else []
    if need_full and not set_replica_identity:
        names = ", ".join(f"{s}.{n}" for r in need_full
                          for s, n in _identity_targets(r)[1 if r.partitions else 0:])
        problems.append(Problem(
            f"without REPLICA IDENTITY FULL replay cannot merge column by column or apply delta "
            f"columns for: {names}",
            "run `pgcarry start --set-replica-identity` (ALTER TABLE ... REPLICA IDENTITY FULL), "
            "or opt a table out with [capture.identity] \"schema.table\" = \"default\"",
        ))
    if problems:
        raise PreflightError(
            "preflight refused:\n" + "\n".join(f"  - {p}" for p in problems),
            hint="nothing was created",
        )
    for rel in need_full:
        for schema, name in _identity_targets(rel):
            conn.execute(sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY FULL").format(
                sql.Identifier(schema), sql.Identifier(name)))
        for p in rel.leaves:
            p.replica_identity = "full"
        rel.info.replica_identity = "full"
    return rels, numbers_as_text
