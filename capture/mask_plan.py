"""The [[mask]] rules checked against production before anything is created (start's preflight):
each rule's table and column exist and are captured, its kind fits the column's type and role (a
key, unique, or referenced by a foreign key), a key's rule reaches every column that references it,
and on production's own rows the masked values keep each unique index distinct and each CHECK true.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from pgcarry.capture import mask
from pgcarry.capture.catalog import Relation
from pgcarry.capture.mask import ColumnType, MaskSpec
from pgcarry.capture.preflight import Problem
from pgcarry.schemas.config import MaskRule
from pgcarry.schemas.manifest import MaskRecord

MIN_KEY_DIGEST = 16  # hex characters of a hash/email digest on a key or unique column

_UNIQUE = """
SELECT coalesce(con.conname, ic.relname),
       CASE WHEN i.indisprimary THEN 'primary key' WHEN con.oid IS NOT NULL THEN 'unique constraint'
            ELSE 'unique index' END,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k),
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum > 0
             AND (a.attnum = ANY(i.indkey) OR a.attnum IN (
                 SELECT d.refobjsubid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                 AND d.objid = i.indexrelid AND d.refclassid = 'pg_class'::regclass))),
       pg_get_expr(i.indpred, i.indrelid, true),
       coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false),
       i.indisreplident
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u')
WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid
ORDER BY 1
"""

_CHECKS = """
SELECT con.conname, pg_get_expr(con.conbin, con.conrelid, true),
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = con.conrelid
             AND a.attnum = ANY(con.conkey))
FROM pg_constraint con WHERE con.conrelid = %s AND con.contype = 'c' AND con.convalidated
ORDER BY 1
"""


@dataclass
class Unique:
    name: str
    what: str  # primary key | unique constraint | unique index
    keys: list[str]  # the index's key definitions (column names or expressions), as SQL
    reads: list[str]  # every column it reads (keys, expressions, predicate)
    predicate: str | None
    nulls_not_distinct: bool
    identity: bool  # the REPLICA IDENTITY index

    def label(self) -> str:
        return f"{self.what} {self.name}"


@dataclass
class Masked:
    """A masked column: the rule it came from, or the referenced column it follows."""

    rel: Relation
    column: str
    spec: MaskSpec
    type: ColumnType
    rule: int | None  # the [[mask]] rule's index; None when it follows a foreign key
    via: tuple[str, str] | None = None  # ("schema.table", column) whose rule it takes
    linked: bool = False  # a key, or joined by a foreign key: restored by value, not by row

    @property
    def where(self) -> str:
        return f"{self.rel.qualified}.{self.column}"

    def record(self) -> MaskRecord:
        return MaskRecord(column=self.column, kind=self.spec.kind, options=self.spec.as_dict,
                          via=list(self.via) if self.via else None, linked=self.linked)


@dataclass
class _Table:
    rel: Relation
    types: dict[str, ColumnType]
    uniques: list[Unique]
    checks: list[tuple[str, str, list[str]]]
    masked: dict[str, Masked] = field(default_factory=dict)


def _read(conn: psycopg.Connection, rel: Relation) -> _Table:
    ident = sql.Identifier(rel.info.schema_name, rel.info.name)
    uniques = [Unique(*r) for r in conn.execute(_UNIQUE, (rel.oid,)).fetchall()]
    return _Table(rel, mask.column_types(conn, ident), uniques, conn.execute(_CHECKS, (rel.oid,)).fetchall())


def _rules(conn: psycopg.Connection, rules: list[MaskRule], tables: dict[str, _Table]) -> list[Problem]:
    out = []
    for i, r in enumerate(rules):
        t = tables.get(r.relation)
        if t is None:
            out.append(Problem(f"mask.{i}: {r.relation} is not a captured table",
                               "fix [[mask]] table (\"schema.table\") or [capture] tables"))
        elif r.column not in t.types:
            out.append(Problem(f"mask.{i}: {r.relation} has no column {r.column!r}", "fix [[mask]] column"))
        elif any(c.name == r.column and (c.generated or c.identity) for c in t.rel.info.columns):
            out.append(Problem(f"mask.{i}: {r.relation}.{r.column} is a generated or identity column",
                               "mask the columns it is computed from, or none"))
        else:
            spec = MaskSpec.of(str(r.kind), r.options)
            t.masked[r.column] = Masked(t.rel, r.column, spec, t.types[r.column], i)
    return out


def _follow(tables: dict[str, _Table]) -> list[Problem]:
    """A key's rule reaches, transitively, every column that references it by foreign key."""
    out: dict[str, Problem] = {}
    changed = True
    while changed:
        changed = False
        for t in tables.values():
            for fk in t.rel.info.foreign_keys:
                parent = tables.get(fk.ref_table)
                for ccol, pcol in zip(fk.columns, fk.ref_columns):
                    p = parent.masked.get(pcol) if parent else None
                    c = t.masked.get(ccol)
                    where = f"{t.rel.qualified}.{ccol}"
                    root = (p.via or (fk.ref_table, pcol)) if p is not None else None
                    if p is not None and root != (t.rel.qualified, ccol) and (
                            c is None or (c.spec == p.spec and c.via is None)):
                        if c is None:  # the key's rule, on the column that references it
                            t.masked[ccol] = Masked(t.rel, ccol, p.spec, t.types[ccol], None, root)
                        c = t.masked[ccol]
                        c.via = root
                        c.linked = p.linked = tables[root[0]].masked[root[1]].linked = changed = True
                    elif p is not None and c is not None and c.spec != p.spec:
                        out.setdefault(where, Problem(
                            f"{where} references {p.where} ({fk.name}) but is masked differently "
                            f"({c.spec.describe()} vs {p.spec.describe()})",
                            "drop one of the two rules: a key's rule applies to every column that "
                            "references it"))
                    elif p is None and c is not None and c.rule is not None:
                        out.setdefault(where, Problem(
                            f"{where} references {fk.ref_table}.{pcol} ({fk.name}), which has no "
                            "mask: the masked values would break the foreign key",
                            f"put the rule on {fk.ref_table}.{pcol} (it applies to {where} too)"))
    return list(out.values())


def key_columns(conn: psycopg.Connection, rels: list[Relation]) -> dict[str, set[str]]:
    """Per relation, the columns in a primary key or unique index or referenced by a foreign key."""
    out = {r.qualified: {c for u in _read(conn, r).uniques for c in u.reads} for r in rels}
    for r in rels:
        for fk in r.info.foreign_keys:
            out.setdefault(fk.ref_table, set()).update(fk.ref_columns)
    return out


def _keyish(t: _Table, column: str) -> Unique | None:
    return next((u for u in t.uniques if column in u.reads), None)


def _static(conn: psycopg.Connection, t: _Table) -> list[Problem]:
    """What the catalog alone refuses; a column refused here is left out of the data checks."""
    out = []
    key = match_key(t.rel, t.uniques)
    for m in list(t.masked.values()):
        m.linked = m.linked or m.column in key
        reason = mask.fit(m.spec, m.type) or (_cast_problem(conn, m) if m.spec.kind == "value" else None)
        u = _keyish(t, m.column)
        if reason is None and u is not None and m.spec.kind in ("hash", "email") \
                and m.type.base != "uuid" and int(m.spec.get("length")) < MIN_KEY_DIGEST:
            reason = (f"a {m.spec.get('length')}-character digest may collide on {u.label()}: "
                      f"use length = {MIN_KEY_DIGEST} or more")
        if reason is not None:
            out.append(Problem(f"{m.where}: {reason}", "a kind that fits (README.md, [[mask]])"))
            del t.masked[m.column]
    return out


def _cast_problem(conn: psycopg.Connection, m: Masked) -> str | None:
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT %s::{}").format(sql.SQL(m.type.name)), (m.spec.get("value"),))
    except psycopg.Error as e:
        return f"value {m.spec.get('value')!r} is not a valid {m.type.name} ({e.diag.message_primary})"
    return None


def match_key(rel: Relation, uniques: list[Unique]) -> list[str]:
    """The columns a later restore matches a row on: the primary key, else the REPLICA IDENTITY
    index; empty for a table without either (its rows are matched whole)."""
    if rel.info.primary_key:
        return list(rel.info.primary_key)
    ident = next((u for u in uniques if u.identity), None)  # never an expression or partial index
    return list(ident.reads) if ident and rel.info.replica_identity == "index" else []


def _masked_rows(t: _Table, needed: list[str]) -> sql.Composable:
    """`SELECT` of the table with its masked columns replaced by their masked values (same name
    and type), and the other `needed` columns as they are."""
    cols = []
    for c in dict.fromkeys([*t.masked, *needed]):
        m = t.masked.get(c)
        if m is None:
            cols.append(sql.Identifier(c))
        else:
            expr = mask.expression(m.spec, sql.Identifier(c), m.type)
            cols.append(sql.SQL("({})::{} AS {}").format(expr, sql.SQL(m.type.name), sql.Identifier(c)))
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(cols), sql.Identifier(t.rel.info.schema_name, t.rel.info.name))


def _count(conn: psycopg.Connection, q: sql.Composable, m: Masked, what: str) -> tuple[int, Problem | None]:
    try:
        with conn.transaction():
            (n,) = conn.execute(q).fetchone()  # type: ignore[misc]
            return int(n), None
    except psycopg.Error as e:
        return 0, Problem(f"{m.where}: masking {what} fails on production's rows: "
                          f"{e.diag.message_primary or e}", "choose a kind or value that fits the column")


def _collisions(conn: psycopg.Connection, t: _Table, u: Unique, m: Masked) -> tuple[int, Problem | None]:
    nn = [] if u.nulls_not_distinct else [sql.SQL("({}) IS NOT NULL").format(sql.SQL(k)) for k in u.keys]
    where = sql.SQL(" AND ").join([sql.SQL("({})").format(sql.SQL(u.predicate or "true")), *nn])
    q = sql.SQL("WITH m AS MATERIALIZED ({rows}) SELECT (SELECT count(*) FROM m WHERE {w}) - "
                "(SELECT count(*) FROM (SELECT DISTINCT {k} FROM m WHERE {w}) d)").format(
        rows=_masked_rows(t, u.reads), w=where, k=sql.SQL(", ").join(sql.SQL(k) for k in u.keys))
    return _count(conn, q, m, u.label())


def _data(conn: psycopg.Connection, t: _Table) -> list[Problem]:
    out: list[Problem] = []
    for u in t.uniques:
        hit = [m for c, m in t.masked.items() if c in u.reads]
        if not hit:
            continue
        n, err = _collisions(conn, t, u, hit[0])
        out += [err] if err else []
        weak = [m for m in hit if not m.spec.salted]
        names = ", ".join(m.where for m in hit)
        if weak:
            m = weak[0]
            out.append(Problem(
                f"{m.where}: {m.spec.describe()} keeps no values distinct, refused on {u.label()} "
                f"({n} collision{'s' * (n != 1)} on production's rows)",
                "kind = \"email\" or \"hash\" (or unique = true on a regex)"))
        elif n:
            out.append(Problem(f"{names}: masked values collide on {u.label()}: {n} "
                               f"collision{'s' * (n != 1)} on production's rows", "a longer `length`"))
    for name, expr, reads in t.checks:
        hit = [m for c, m in t.masked.items() if c in reads]
        if hit:
            q = sql.SQL("SELECT count(*) FROM ({}) m WHERE ({}) IS FALSE").format(
                _masked_rows(t, reads), sql.SQL(expr))
            n, err = _count(conn, q, hit[0], f"check {name}")
            out += [err] if err else []
            if n:
                out.append(Problem(f"{hit[0].where}: masked values break CHECK {name} on {n} rows",
                                   "a mask whose values the check accepts"))
    for m in t.masked.values():
        if m.type.max_length is not None and mask.static_width(m.spec) is None:
            q = sql.SQL("SELECT count(*) FROM {} WHERE length({}) > {}").format(
                sql.Identifier(t.rel.info.schema_name, t.rel.info.name),
                mask.expression(m.spec, sql.Identifier(m.column), m.type), sql.Literal(m.type.max_length))
            n, err = _count(conn, q, m, "the column")
            out += [err] if err else []
            if n:
                out.append(Problem(f"{m.where}: {n} masked values are longer than {m.type.name} allows",
                                   "a shorter mask"))
    return out


def check(conn: psycopg.Connection, rules: list[MaskRule], rels: list[Relation],
          salt: str | None) -> list[Problem]:
    """Check `rules` against production; record each relation's masks in its TableInfo (the
    manifest) and return the problems (empty: every rule is safe to apply to the copy)."""
    if not rules:
        return []
    tables = {r.qualified: _read(conn, r) for r in rels}
    problems = _rules(conn, rules, tables)
    problems += _follow(tables)
    mask.load_salt(conn, salt)
    for t in tables.values():
        problems += _static(conn, t)
        if t.masked:
            problems += _data(conn, t)
            t.rel.info.masks = [m.record() for m in t.masked.values()]
            t.rel.info.mask_key = match_key(t.rel, t.uniques)
    return problems
