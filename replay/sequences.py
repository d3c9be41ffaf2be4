"""Sequences after replay: every sequence a replayed table uses — owned by a column (serial,
identity) or named in a column default (``nextval('invoice_no')``, in any schema) — is moved so its
next value is past both production's own next value (ids production handed out and later deleted
are never handed out again) and the largest value present. Never backwards; ascending sequences.

Production's positions are read from the source under the same sequence name: when `replay`
runs, or by the cutover after the fence (recorded in its state, since the overwrite replaces them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

_id = sql.Identifier

_USED = """
SELECT sn.nspname, s.relname, sq.seqincrement, sq.seqmin, tn.nspname, t.relname, a.attname,
       a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
FROM (SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS attnum   -- owned
      FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.deptype IN ('a', 'i') AND d.refobjid = ANY(%(rels)s)
      UNION
      SELECT d.refobjid, ad.adrelid, ad.adnum                              -- named in a default
      FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass
        AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
      WHERE ad.adrelid = ANY(%(rels)s)) u
JOIN pg_class s ON s.oid = u.seq AND s.relkind = 'S'
JOIN pg_sequence sq ON sq.seqrelid = s.oid
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_class t ON t.oid = u.rel JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = u.rel AND a.attnum = u.attnum
ORDER BY 1, 2, 5, 6, 7
"""
_ALL = """
SELECT n.nspname, c.relname, has_sequence_privilege(c.oid, 'SELECT'), sq.seqincrement
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequence sq ON sq.seqrelid = c.oid
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcarry')
  AND (%(names)s::text[] IS NULL OR n.nspname || '.' || c.relname = ANY(%(names)s::text[]))
ORDER BY 1, 2
"""


@dataclass
class Used:
    """A sequence of the target and the integer columns of replayed tables that draw from it."""

    schema: str
    name: str
    increment: int
    minimum: int
    columns: list[tuple[tuple[str, str], str]] = field(default_factory=list)

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class Production:
    """Production's next value per sequence ("schema.name"), as read from the source or recorded
    by the cutover; `unknown` says why there are none (only the values present then count)."""

    next: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # sequences the source role may not read
    unknown: str | None = None

    def as_state(self) -> dict[str, Any]:
        return {"next": self.next, "unreadable": self.unreadable, "unknown": self.unknown}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Production:
        if not state:
            return cls(unknown="production's sequence positions were not recorded")
        return cls(dict(state["next"]), list(state["unreadable"]), state.get("unknown"))


ProductionSource = Callable[[list[str]], Production]


def used(conn: psycopg.Connection, oids: list[int]) -> list[Used]:
    """Every sequence the tables `oids` own or name in a default, with their integer columns."""
    out: dict[str, Used] = {}
    for sschema, sname, inc, low, tschema, tname, col, integer in conn.execute(_USED, {"rels": oids}):
        u = out.setdefault(f"{sschema}.{sname}", Used(sschema, sname, inc, low))
        if integer:
            u.columns.append(((tschema, tname), col))
    return list(out.values())


def _next_value(conn: psycopg.Connection, schema: str, name: str, increment: int) -> int:
    last, called = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
        _id(schema, name))).fetchone()  # type: ignore[misc]
    return int(last) + increment if called else int(last)


def read(dsn: str, names: list[str] | None = None) -> Production:
    """Production's next value of each sequence in `names` (all user sequences when None) that
    exists on the source; sequences the role may not read are listed, not guessed."""
    out = Production()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for schema, name, readable, inc in conn.execute(_ALL, {"names": names}).fetchall():
            rel = f"{schema}.{name}"
            if readable:
                out.next[rel] = _next_value(conn, schema, name, inc)
            else:
                out.unreadable.append(rel)
    return out


def _identity(dsn: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return conn.execute("SELECT system_identifier, current_database() "
                            "FROM pg_control_system()").fetchone()


def from_source(dsn: str, target: str) -> ProductionSource:
    """A ProductionSource reading the source when replay asks. When the source cannot tell
    (unreachable, or it is the target itself: overwritten already) the positions are `unknown`,
    which the report shows; replay then counts only the values present."""
    def source(names: list[str]) -> Production:
        try:
            if _identity(dsn) == _identity(target):
                return Production(unknown="the source is the target database itself: production's "
                                  "positions before the overwrite are unknown (`pgcarry cutover` "
                                  "records them after the fence)")
            return read(dsn, names)
        except psycopg.OperationalError as e:
            return Production(unknown=f"the source could not be read: "
                                      f"{(e.diag.message_primary or str(e)).strip()}")
    return source


def _column_next(conn: psycopg.Connection, u: Used) -> int | None:
    if not u.columns:
        return None
    parts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT max({})::bigint FROM {}").format(_id(col), _id(*table))
        for table, col in u.columns)
    row = conn.execute(sql.SQL("SELECT max(m) FROM ({}) x(m)").format(parts)).fetchone()
    return None if row is None or row[0] is None else int(row[0]) + u.increment


@dataclass(frozen=True)
class Position:
    now: int  # the sequence's next value
    present: int | None  # the next value past the largest one in its columns
    production: int | None  # production's next value

    @property
    def wanted(self) -> int | None:
        known = [v for v in (self.present, self.production) if v is not None]
        return max(known) if known else None

    @property
    def ok(self) -> bool:
        return self.wanted is None or self.now >= self.wanted


def position(conn: psycopg.Connection, u: Used, production: Production) -> Position:
    return Position(_next_value(conn, u.schema, u.name, u.increment), _column_next(conn, u),
                    production.next.get(u.relation))


def advance(conn: psycopg.Connection, seqs: list[Used], production: Production) -> list[tuple[str, int]]:
    """Move each ascending sequence forward to its wanted next value; (sequence, last value) of
    those moved."""
    moved = []
    for u in seqs:
        if u.increment < 0:
            continue
        pos = position(conn, u, production)
        want = pos.wanted
        if want is None or pos.ok:
            continue
        last = want - u.increment
        ident = _id(u.schema, u.name).as_string(conn)
        if last >= u.minimum:
            conn.execute("SELECT setval(%s::regclass, %s, true)", (ident, last))
        else:  # the first value itself is wanted: nothing of it was handed out
            conn.execute("SELECT setval(%s::regclass, %s, false)", (ident, want))
        moved.append((u.relation, last))
    return moved


def refuse_unreadable(seqs: list[Used], production: Production) -> list[str]:
    """The sequences replay needs that production has but the source role could not read."""
    return [u.relation for u in seqs if u.relation in production.unreadable]
