"""What the target database looks like now: columns, keys, foreign keys and owned sequences.

Replay maps captured relations onto this (the test side may have changed the schema), orders
tables by its foreign keys and checks them, and advances its sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from pgcarry.replay.graph import Edge


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type: str
    generated: bool = False
    identity: str = ""  # "a" (ALWAYS), "d" (BY DEFAULT) or ""


@dataclass
class TargetTable:
    schema: str
    name: str
    oid: int
    columns: dict[str, TargetColumn] = field(default_factory=dict)
    primary_key: list[str] = field(default_factory=list)
    deferrable_key: bool = False  # the primary key is checked at commit, not per row

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> tuple[str, str]:
        return (self.schema, self.name)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: str
    columns: tuple[str, ...]
    parent: str
    ref_columns: tuple[str, ...]
    deferrable: bool

    def edge(self) -> Edge:
        return Edge(self.child, self.parent, self.deferrable, self.name)


_TABLES = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s)
"""
_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '',
       a.attidentity
FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_PKEYS = """
SELECT i.indrelid, a.attname, NOT i.indimmediate
FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, pos)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indisprimary AND i.indrelid = ANY(%s)
ORDER BY i.indrelid, k.pos
"""
_FKEYS = """
SELECT con.conname, cn.nspname || '.' || cc.relname, pn.nspname || '.' || pc.relname,
       con.condeferrable,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.contype = 'f' AND (con.conrelid = ANY(%s) OR con.confrelid = ANY(%s))
ORDER BY 2, 1
"""
_SEQUENCES = """
SELECT a.attname, sn.nspname, s.relname
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = %s AND d.deptype IN ('a', 'i')
ORDER BY a.attnum
"""


def read_tables(conn: psycopg.Connection, relations: list[str]) -> dict[str, TargetTable]:
    """The target tables among `relations` ("schema.table"), keyed by relation."""
    tables: dict[int, TargetTable] = {}
    for oid, schema, name in conn.execute(_TABLES, (relations,)):
        tables[oid] = TargetTable(schema, name, oid)
    oids = list(tables)
    for oid, name, typ, generated, identity in conn.execute(_COLUMNS, (oids,)):
        tables[oid].columns[name] = TargetColumn(name, typ, generated, identity)
    for oid, name, deferrable in conn.execute(_PKEYS, (oids,)):
        tables[oid].primary_key.append(name)
        tables[oid].deferrable_key = deferrable
    return {t.relation: t for t in tables.values()}


def read_foreign_keys(conn: psycopg.Connection, tables: list[TargetTable]) -> list[ForeignKey]:
    """Foreign keys whose child or parent is one of `tables`."""
    oids = [t.oid for t in tables]
    return [
        ForeignKey(name, child, tuple(cols), parent, tuple(refs), deferrable)
        for name, child, parent, deferrable, cols, refs in conn.execute(_FKEYS, (oids, oids))
    ]


def owned_sequences(conn: psycopg.Connection, table: TargetTable) -> list[tuple[str, str, str]]:
    """(column, sequence schema, sequence name) for serial and identity columns of `table`."""
    return [tuple(r) for r in conn.execute(_SEQUENCES, (table.oid,))]  # type: ignore[misc]
