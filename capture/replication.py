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
    # wal2json splits add-tables on ',' and '.', with '\' as its escape; '*' is its wildcard.
    return "".join("\\" + ch if ch in ",.*\\ " else ch for ch in name)


def add_tables(relations: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{_escape(s)}.{_escape(t)}" for s, t in relations)


def plugin_options(relations: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {**WAL2JSON_OPTIONS, "add-tables": add_tables(relations)}


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
