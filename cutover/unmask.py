"""PII guard: before the overwrite, production's masked columns (with primary keys) are kept in the
`pgcarry_unmask` schema; after replay they are written back by primary key to every row that
existed in production, and `check` proves no masked value survived on such a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.replay import session, types
from pgcarry.replay.policy import distinct_sql
from pgcarry.schemas.manifest import Manifest

SCHEMA = "pgcarry_unmask"


def _masked(manifest: Manifest) -> list[Any]:
    return [t for t in manifest.tables.values() if t.masked_columns and t.primary_key]


def _side(t: Any) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(t.qualified))


def _table(t: Any) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(t.schema_name), sql.Identifier(t.name))


def save(dsn: str, manifest: Manifest, into: str | None = None) -> dict[str, int]:
    """Keep production's masked values by primary key in `into` (default: production itself),
    in one transaction of `into`; re-runnable."""
    out = {}
    with session.connect(dsn) as src, session.connect(into or dsn) as dst:
        dst.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        for t in _masked(manifest):
            names = t.primary_key + t.masked_columns
            cols = sql.SQL(", ").join(map(sql.Identifier, names))
            types = dict(src.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0", (_table(t).as_string(src),)))
            dst.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_side(t)))
            dst.execute(sql.SQL("CREATE TABLE {} ({})").format(_side(t), sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in names)))
            n = 0
            with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                    cols, _table(t))) as cin, dst.cursor().copy(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(_side(t), cols)) as cout:
                for chunk in cin:
                    cout.write(chunk)
                    n += bytes(chunk).count(b"\n")
            out[t.qualified] = n
    return out


def _join(t: Any) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c))
                                 for c in t.primary_key)


def _present(conn: psycopg.Connection, t: Any) -> list[str]:
    """The masked columns the target table still has."""
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                        "AND attnum > 0 AND NOT attisdropped",
                        (_table(t).as_string(conn),)).fetchall()
    return [c for c in t.masked_columns if c in {r[0] for r in rows}]


def _differing(conn: psycopg.Connection, manifest: Manifest) -> Iterator[tuple[Any, list[str], sql.Composable]]:
    """(table, its masked columns still present, "t.col IS DISTINCT FROM s.col OR ..."; as
    text for types without btree equality, such as json)."""
    for t in _masked(manifest):
        cols = _present(conn, t)
        if cols:
            text = types.text_compared(conn, _table(t).as_string(conn), cols)
            yield t, cols, sql.SQL(" OR ").join(
                distinct_sql(sql.Identifier("t", c), sql.Identifier("s", c), c in text) for c in cols)


def restore(dsn: str, manifest: Manifest) -> dict[str, int]:
    """Write production's values back over the masked ones; rows updated per table."""
    out = {}
    with session.connect(dsn) as conn:
        for t, cols, differ in _differing(conn, manifest):
            sets = sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in cols)
            cur = conn.execute(sql.SQL(
                "UPDATE {} t SET {} FROM {} s WHERE {} AND ({})").format(
                    _table(t), sets, _side(t), _join(t), differ))
            out[t.qualified] = cur.rowcount
    return out


def check(dsn: str, manifest: Manifest) -> dict[str, int]:
    """Rows of production whose masked columns differ from production's values (want all 0)."""
    out = {}
    with session.connect(dsn) as conn:
        for t, _cols, differ in _differing(conn, manifest):
            (n,) = conn.execute(sql.SQL("SELECT count(*) FROM {} t JOIN {} s ON {} WHERE {}").format(
                _table(t), _side(t), _join(t), differ)).fetchone()  # type: ignore[misc]
            out[t.qualified] = n
    return out


def discard(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
