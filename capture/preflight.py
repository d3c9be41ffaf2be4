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


def _plugin_problem(conn: psycopg.Connection) -> Problem | None:
    """Loading wal2json is the only reliable test: a temporary slot, dropped at once."""
    probe = f"pgcarry_probe_{secrets.token_hex(4)}"
    try:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)", (probe,))
        conn.execute("SELECT pg_drop_replication_slot(%s)", (probe,))
    except psycopg.Error as e:
        text = (e.diag.message_primary or str(e)).strip()
        if "wal2json" in text or "could not access file" in text:
            return Problem(
                f"the wal2json output plugin is not installed ({text})",
                "install it on the database server (Debian: apt-get install postgresql-15-wal2json)",
            )
        return Problem(f"cannot create a logical replication slot: {text}", "see the server log")
    return None


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
        ident = rel.info.replica_identity
        if not rel.capturable and fix and capture.identity.get(name) != "default":
            need_full.append(rel)
        elif not rel.capturable:
            out.append(Problem(
                f"{name} has no primary key and REPLICA IDENTITY {ident.upper()}: "
                "its UPDATEs and DELETEs would vanish from the stream",
                f"ALTER TABLE {name} REPLICA IDENTITY FULL (or add a primary key)",
            ))
        elif ident != "full" and capture.identity.get(name) != "default":
            need_full.append(rel)
    return out, need_full


def check(
    conn: psycopg.Connection, slot: str, capture: CaptureConfig, *, set_replica_identity: bool = False,
    more: Callable[[list[Relation]], list[Problem]] | None = None,
) -> list[Relation]:
    """Run every check (and `more` on the captured relations: the masking rules); on success
    return the captured relations, else raise PreflightError."""
    problems = _server_problems(conn, slot)
    rels = relations(conn, capture)
    table_refusals, need_full = table_problems(rels, capture, set_replica_identity)
    problems += table_refusals
    if more is not None:
        problems += more(rels)
    if not problems:
        plugin = _plugin_problem(conn)
        problems += [plugin] if plugin else []
    if need_full and not set_replica_identity:
        names = ", ".join(r.qualified for r in need_full)
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
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY FULL").format(
                sql.Identifier(rel.info.schema_name), sql.Identifier(rel.info.name)
            )
        )
        rel.info.replica_identity = "full"
    return rels
