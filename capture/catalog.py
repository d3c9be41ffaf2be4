"""Catalog reads on the source: which relations to capture and what they look like (key, replica
identity and its index, columns and types, foreign keys, triggers). Used by init, preflight and
the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pgcarry.schemas.config import CaptureConfig
from pgcarry.schemas.manifest import Column, ForeignKey, TableInfo

_IDENTITY = {"f": "full", "d": "default", "i": "index", "n": "nothing"}

_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgcarry')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attgenerated <> '', a.attidentity <> ''
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# the columns of the primary key (flag indisprimary) or of the replica identity index
_INDEX_COLUMNS = """
SELECT a.attname
FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.{flag}
ORDER BY k.ord
"""

_TRIGGERS = """
SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal ORDER BY tgname
"""

_FKEYS = """
SELECT con.conname, rn.nspname, rc.relname, con.condeferrable,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint con
JOIN pg_class rc ON rc.oid = con.confrelid
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.conrelid = %s AND con.contype = 'f'
ORDER BY con.conname
"""


_PARTITIONS = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, t.isleaf,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_partition_tree(%s) t
JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.level > 0
ORDER BY n.nspname, c.relname
"""


@dataclass
class Partition:
    """A partition below a captured partitioned table (a leaf holds rows; others only route)."""

    oid: int
    schema: str
    name: str
    replica_identity: str
    leaf: bool
    has_pk: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def capturable(self) -> bool:
        ri = self.replica_identity
        return ri in ("full", "index") or (ri == "default" and self.has_pk)


@dataclass
class Relation:
    info: TableInfo
    oid: int
    partitions: list[Partition] = field(default_factory=list)

    @property
    def leaves(self) -> list[Partition]:
        return [p for p in self.partitions if p.leaf]

    @property
    def qualified(self) -> str:
        return self.info.qualified

    @property
    def capturable(self) -> bool:
        """UPDATE/DELETE reach the stream with a key (a primary key, an index, or FULL); for a
        partitioned table, of every leaf (a parent's own replica identity governs none of them)."""
        if self.partitions:
            return all(p.capturable for p in self.leaves)
        ri = self.info.replica_identity
        return ri in ("full", "index") or (ri == "default" and bool(self.info.primary_key))


def partitions(conn: psycopg.Connection, oid: int) -> list[Partition]:
    """Every partition below the partitioned table `oid`, leaves and intermediate ones."""
    return [Partition(r[0], r[1], r[2], _IDENTITY.get(r[3], r[3]), r[4], r[5])
            for r in conn.execute(_PARTITIONS, (oid,)).fetchall()]


def effective_identity(rel: Relation) -> str:
    """The replica identity a partitioned table's changes arrive with: FULL only when every leaf
    has it (no leaf yet: its own)."""
    leaves = rel.leaves
    if not leaves:
        return rel.info.replica_identity
    kinds = {p.replica_identity for p in leaves}
    return "full" if kinds == {"full"} else next(k for k in ("nothing", "default", "index") if k in kinds)


def _index_columns(conn: psycopg.Connection, oid: int, flag: str) -> list[str]:
    q = sql.SQL(_INDEX_COLUMNS).format(flag=sql.Identifier(flag))
    return [r[0] for r in conn.execute(q, (oid,)).fetchall()]


def read_relation(conn: psycopg.Connection, oid: int, schema: str, name: str, ident: str,
                  kind: str = "r") -> Relation:
    cols = [
        Column(name=r[0], type=r[1], not_null=r[2], generated=r[3], identity=r[4])
        for r in conn.execute(_COLUMNS, (oid,)).fetchall()
    ]
    pk = _index_columns(conn, oid, "indisprimary")
    fks = [
        ForeignKey(name=r[0], ref_table=f"{r[1]}.{r[2]}", deferrable=r[3], columns=r[4], ref_columns=r[5])
        for r in conn.execute(_FKEYS, (oid,)).fetchall()
    ]
    info = TableInfo(
        schema_name=schema, name=name, primary_key=pk,
        replica_identity=_IDENTITY.get(ident, ident), columns=cols, foreign_keys=fks,
    )
    info.triggers = [r[0] for r in conn.execute(_TRIGGERS, (oid,)).fetchall()]
    if info.replica_identity == "index":  # wal2json's pk is empty then: the index is the key
        info.identity_key = _index_columns(conn, oid, "indisreplident")
    rel = Relation(info=info, oid=oid)
    if kind == "p":
        rel.partitions = partitions(conn, oid)
        info.partitioned, info.partitions = True, [[p.schema, p.name] for p in rel.partitions]
        info.replica_identity = effective_identity(rel)
    return rel


def relations(conn: psycopg.Connection, capture: CaptureConfig | None = None) -> list[Relation]:
    """Every user relation (those the capture config selects, when given)."""
    out = []
    for oid, schema, name, ident, kind in conn.execute(_TABLES).fetchall():
        if capture is None or capture.wants(schema, name):
            out.append(read_relation(conn, oid, schema, name, ident, kind))
    return out
