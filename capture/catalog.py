"""Catalog reads on the source: which relations to capture and what they look like (key, replica
identity and its index, columns and types, foreign keys, triggers). Used by init, preflight and
the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgcarry.schemas.config import CaptureConfig
from pgcarry.schemas.manifest import Column, ForeignKey, TableInfo

_IDENTITY = {"f": "full", "d": "default", "i": "index", "n": "nothing"}

_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relreplident
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


@dataclass
class Relation:
    info: TableInfo
    oid: int

    @property
    def qualified(self) -> str:
        return self.info.qualified

    @property
    def capturable(self) -> bool:
        """UPDATE/DELETE reach the stream with a key (a primary key, an index, or FULL)."""
        ri = self.info.replica_identity
        return ri in ("full", "index") or (ri == "default" and bool(self.info.primary_key))


def _index_columns(conn: psycopg.Connection, oid: int, flag: str) -> list[str]:
    q = sql.SQL(_INDEX_COLUMNS).format(flag=sql.Identifier(flag))
    return [r[0] for r in conn.execute(q, (oid,)).fetchall()]


def read_relation(conn: psycopg.Connection, oid: int, schema: str, name: str, ident: str) -> Relation:
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
    return Relation(info=info, oid=oid)


def relations(conn: psycopg.Connection, capture: CaptureConfig | None = None) -> list[Relation]:
    """Every user relation (those the capture config selects, when given)."""
    out = []
    for oid, schema, name, ident in conn.execute(_TABLES).fetchall():
        if capture is None or capture.wants(f"{schema}.{name}"):
            out.append(read_relation(conn, oid, schema, name, ident))
    return out
