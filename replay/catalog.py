"""What the target database looks like now: columns (and how their types compare and stage),
keys, foreign keys.

Replay maps captured relations onto this (the test side may have changed the schema), orders
tables by its foreign keys and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from pgcarry.replay import types
from pgcarry.replay.graph import Edge


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type: str
    generated: bool = False
    identity: str = ""  # "a" (ALWAYS), "d" (BY DEFAULT) or ""
    text_compare: bool = False  # no btree equality (json, xml, point, box ...): compare as text
    stage_type: str | None = None  # a domain's base type: what staging holds its values in


@dataclass
class TargetTable:
    schema: str
    name: str
    oid: int
    columns: dict[str, TargetColumn] = field(default_factory=dict)
    primary_key: list[str] = field(default_factory=list)
    deferrable_key: bool = False  # the primary key is checked at commit, not per row
    unique_keys: list[list[str]] = field(default_factory=list)  # other immediate unique indexes
    # on NOT NULL columns (a REPLICA IDENTITY USING INDEX key is one of them)

    def has_key(self, columns: list[str]) -> bool:
        """Whether `columns` identify a row: the primary key or a unique NOT NULL index."""
        return sorted(columns) == sorted(self.primary_key) or self._unique(columns)

    def checks_per_row(self, columns: list[str]) -> bool:
        """Whether inserting an existing `columns` value fails at once (not at COMMIT)."""
        return (sorted(columns) == sorted(self.primary_key) and not self.deferrable_key
                ) or self._unique(columns)

    def _unique(self, columns: list[str]) -> bool:
        return any(sorted(columns) == sorted(k) for k in self.unique_keys)

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
       a.attidentity, a.atttypid
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
_UNIQUE = """
SELECT i.indrelid, ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, pos)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                         ORDER BY k.pos)
FROM pg_index i
WHERE i.indisunique AND NOT i.indisprimary AND i.indimmediate AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indrelid = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k(attnum) JOIN pg_attribute a
                  ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE NOT a.attnotnull)
ORDER BY i.indrelid, i.indexrelid
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


def read_tables(conn: psycopg.Connection, relations: list[str]) -> dict[str, TargetTable]:
    """The target tables among `relations` ("schema.table"), keyed by relation."""
    tables: dict[int, TargetTable] = {}
    for oid, schema, name in conn.execute(_TABLES, (relations,)):
        tables[oid] = TargetTable(schema, name, oid)
    oids = list(tables)
    cols = conn.execute(_COLUMNS, (oids,)).fetchall()
    facts = types.facts(conn, {r[5] for r in cols})
    for oid, name, typ, generated, identity, typid in cols:
        f = facts[typid]
        tables[oid].columns[name] = TargetColumn(name, typ, generated, identity, f.text_compare,
                                                 f.stage_type)
    for oid, name, deferrable in conn.execute(_PKEYS, (oids,)):
        tables[oid].primary_key.append(name)
        tables[oid].deferrable_key = deferrable
    for oid, names in conn.execute(_UNIQUE, (oids,)):
        tables[oid].unique_keys.append(list(names))
    return {t.relation: t for t in tables.values()}


def read_foreign_keys(conn: psycopg.Connection, tables: list[TargetTable]) -> list[ForeignKey]:
    """Foreign keys whose child or parent is one of `tables`."""
    oids = [t.oid for t in tables]
    return [
        ForeignKey(name, child, tuple(cols), parent, tuple(refs), deferrable)
        for name, child, parent, deferrable, cols, refs in conn.execute(_FKEYS, (oids, oids))
    ]
