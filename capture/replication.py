"""The replication connection: psycopg2's LogicalReplicationConnection with the session settings
and wal2json options that make every value's text deterministic and lossless.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psycopg2
import psycopg2.extras
from psycopg2 import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcarry.schemas.change import NUMBERS_AS_TEXT  # numbers as JSON text: NaN/±Infinity survive
from pgcarry.schemas.session import startup_options

# Value text must not depend on the server's or the client's defaults.
SESSION_OPTIONS = startup_options()

WAL2JSON_OPTIONS = {
    "format-version": "2",
    "include-xids": "1",
    "include-timestamp": "1",
    "include-lsn": "1",
    "include-pk": "1",
    "include-types": "1",
    "include-transaction": "1",
}


def _escape(name: str) -> str:
    """`name` for wal2json's add-tables, matching exactly it. wal2json (string_to_SelectTable,
    parse_table_identifier) splits the list on ',' and whitespace and a name on '.', takes a
    leading '*' as a wildcard, and drops a backslash before any byte, keeping that byte; so every
    ASCII character but letters, digits and '_' is escaped (non-ASCII bytes never separate)."""
    return "".join(ch if ch.isalnum() or ch == "_" or ord(ch) > 127 else "\\" + ch for ch in name)


def add_tables(relations: Iterable[tuple[str, str]], schemas: Iterable[str] = ()) -> str:
    """Exact names, then `schema.*` for each schema of `schemas` (where partitioned tables keep
    partitions: wal2json names a change by its partition, and one attached later is not listed)."""
    wild = sorted(set(schemas))
    exact = [f"{_escape(s)}.{_escape(t)}" for s, t in relations if s not in wild]
    return ",".join(exact + [f"{_escape(s)}.*" for s in wild])


def plugin_options(relations: Iterable[tuple[str, str]], schemas: Iterable[str] = (),
                   numbers_as_text: bool = False) -> dict[str, str]:
    extra = {NUMBERS_AS_TEXT: "1"} if numbers_as_text else {}
    return {**WAL2JSON_OPTIONS, **extra, "add-tables": add_tables(relations, schemas)}


def start_command(slot: str, options: dict[str, str]) -> sql.Composed:
    """START_REPLICATION for the slot. Built here because psycopg2's start_replication() quotes the
    option values as latin-1 and fails on a non-Latin table name in add-tables."""
    cmd = sql.SQL("START_REPLICATION SLOT {} LOGICAL 0/0").format(sql.Identifier(slot))
    if not options:
        return cmd
    opts = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options.items()
    )
    return sql.SQL("{} ({})").format(cmd, opts)


def connect(dsn: str) -> psycopg2.extensions.connection:
    """A replication connection; the password travels in the environment, never in argv/logs."""
    params = conninfo_to_dict(dsn)
    opts = params.get("options") or ""
    params["options"] = f"{opts} {SESSION_OPTIONS}".strip()
    params["client_encoding"] = "UTF8"  # non-ASCII table names in add-tables (psycopg2: latin-1)
    params.setdefault("application_name", f"pgcarry-{os.getpid()}")
    return psycopg2.connect(
        make_conninfo(**params), connection_factory=psycopg2.extras.LogicalReplicationConnection
    )
