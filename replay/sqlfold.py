"""The `net` fold done by the target server: raw wal2json documents are COPYed into a temporary
table and folded per key with jsonb, so no value is parsed in Python (the same rules as fold.py,
which stays the reference for verify and mode `txn`; the property tests hold the two together).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.changelog.base import RawChange
from pgcarry.replay.fold import TableFold
from pgcarry.replay.plan import TablePlan
from pgcarry.replay.stage import Stage, create
from pgcarry.schemas.change import DELETE, INSERT, TRUNCATE, UPDATE, Change
from pgcarry.schemas.lsn import Lsn

RAW = "_pgcarry_raw"
_id = sql.Identifier


class SqlTableFold(TableFold):
    """A relation's summary whose per-row effects live in the server, counted there."""

    def __init__(self, relation: str, pk: list[str]) -> None:
        super().__init__(relation, pk)
        self.net: dict[str, int] = {}
        self.truncate_ord: int | None = None

    def count(self, op: str) -> int:
        return self.net.get(op, 0)

    @property
    def noop_updates(self) -> int:  # type: ignore[override]
        return self.net.get("noop", 0)


def load_raw(conn: psycopg.Connection, rows: Iterator[RawChange], stats: dict[str, Any],
             progress: Callable[[str], None]) -> dict[str, SqlTableFold]:
    """COPY every change into the server; summarise relations (key, counts) on the way. Only a
    relation's first documents are parsed here (for its key); the server parses the rest."""
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (ord bigint, lsn bigint, rel text, action text, "
                         "doc jsonb) ON COMMIT DROP").format(_id(RAW)))
    folds: dict[str, SqlTableFold] = {}
    counts: Counter[tuple[str, str]] = Counter()
    ord_, commit, ntx = 0, -1, 0
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN").format(_id(RAW))) as cp:
        write = cp.write_row
        for commit_lsn, lsn, action, schema, table, raw in rows:
            ord_ += 1
            if commit_lsn != commit:
                commit, ntx = commit_lsn, ntx + 1
                stats.setdefault("first", Lsn(commit_lsn))
            rel = f"{schema}.{table}"
            counts[(rel, action)] += 1
            f = folds.get(rel)
            if f is None or (not f.pk and action != TRUNCATE):
                f = folds.setdefault(rel, SqlTableFold(rel, []))
                f.pk = f.pk or (Change(0, Lsn(lsn), action, schema, table, raw).pk
                                if action != TRUNCATE else [])
            if action == TRUNCATE:
                f.truncated_at, f.truncate_ord = Lsn(lsn), ord_
            write((ord_, lsn, rel, action, raw))
            if ord_ % 20000 == 0:
                progress(f"reading the log: {ord_} changes")
    if ntx:
        stats["last"], stats["transactions"] = Lsn(commit), ntx
    stats["changes"] = ord_
    for (rel, action), n in counts.items():
        folds[rel].captured[action] = n
    if folds:
        conn.execute(sql.SQL("CREATE INDEX ON {} (rel, ord)").format(_id(RAW)))
        conn.execute(_MERGE)
        _columns(conn, folds)
    return folds


def _columns(conn: psycopg.Connection, folds: dict[str, SqlTableFold]) -> None:
    q = sql.SQL(
        "SELECT r.rel, c->>'name', c->>'type', bool_or(r.action = 'U' AND "
        "jsonb_array_length(r.doc->'identity') < jsonb_array_length(r.doc->'columns')) "
        "FROM (SELECT DISTINCT ON (rel, action) * FROM {raw} WHERE action <> 'T' "
        "      ORDER BY rel, action, jsonb_array_length(coalesce(doc->'columns', doc->'identity')) DESC) r,"
        " jsonb_array_elements(coalesce(r.doc->'columns', r.doc->'identity')) c GROUP BY 1, 2, 3"
    ).format(raw=_id(RAW))
    for rel, name, typ, partial in conn.execute(q):
        folds[rel].columns.setdefault(name, typ)
        folds[rel].partial_old = folds[rel].partial_old or bool(partial)
    partial_q = sql.SQL("SELECT DISTINCT rel FROM {} WHERE action = 'U' AND "
                        "jsonb_array_length(doc->'identity') < jsonb_array_length(doc->'columns')"
                        ).format(_id(RAW))
    for (rel,) in conn.execute(partial_q):
        folds[rel].partial_old = True


_MERGE = "CREATE OR REPLACE AGGREGATE pg_temp.pgcarry_merge (jsonb) (SFUNC = jsonb_concat, STYPE = jsonb)"

# One pass builds each change's old/new objects; one sort by (key, pos) feeds window aggregates over
# each key's events: first kind and old image, last kind, and the images after the last delete
# merged in order (later columns win; omitted TOAST columns keep earlier values).
_NET = """
CREATE TEMP TABLE {net} ON COMMIT DROP AS
WITH k AS MATERIALIZED (
  SELECT r.*, {okey} AS okey, {nkey} AS nkey FROM (
    SELECT ord, lsn, action,
      (SELECT jsonb_object_agg(c->>'name', c->'value') FROM jsonb_array_elements(doc->'identity') c) AS old,
      (SELECT jsonb_object_agg(c->>'name', c->'value') FROM jsonb_array_elements(doc->'columns') c) AS new
    FROM {raw} WHERE rel = %(rel)s AND action <> 'T' AND ord > %(after)s OFFSET 0) r
), ev AS MATERIALIZED (
  SELECT nkey AS key, ord * 2 AS pos, lsn, 'I' AS kind, new AS img, NULL::jsonb AS old
    FROM k WHERE action = 'I'
  UNION ALL SELECT okey, ord * 2, lsn, 'D', NULL, old FROM k WHERE action = 'D'
  UNION ALL SELECT okey, ord * 2, lsn, 'U', new, old FROM k WHERE action = 'U' AND okey = nkey
  UNION ALL SELECT okey, ord * 2, lsn, 'D', NULL, old FROM k WHERE action = 'U' AND okey <> nkey
  UNION ALL SELECT nkey, ord * 2 + 1, lsn, 'I', old || new, NULL FROM k WHERE action = 'U' AND okey <> nkey
), w AS (
  SELECT ev.*, max(pos) FILTER (WHERE kind = 'D') OVER p AS last_d
  FROM ev WINDOW p AS (PARTITION BY key ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
), x AS (
  SELECT key, pos, kind, last_d, first_value(kind) OVER p AS first_kind,
         first_value(old) OVER p AS base, max(lsn) OVER p AS lsn, max(pos) OVER p AS last_pos,
         pg_temp.pgcarry_merge(img) FILTER (WHERE last_d IS NULL OR pos > last_d) OVER p AS img
  FROM w WINDOW p AS (PARTITION BY key ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT key, lsn, base,
       CASE WHEN first_kind <> 'I' AND kind <> 'D' THEN 'U'
            WHEN kind <> 'D' THEN 'I' WHEN first_kind <> 'I' THEN 'D' END AS op,
       CASE WHEN last_d IS NULL AND first_kind <> 'I' THEN base ELSE '{{}}'::jsonb END
         || coalesce(img, '{{}}'::jsonb) AS final
FROM x WHERE pos = last_pos
"""


def _keyexpr(image: str, pk: list[str], fallback: str | None = None) -> sql.Composable:
    parts = []
    for c in pk:
        e = sql.SQL("{}->{}").format(sql.SQL(image), sql.Literal(c))
        if fallback:
            e = sql.SQL("coalesce({}, {}->{})").format(e, sql.SQL(fallback), sql.Literal(c))
        parts.append(e)
    return sql.SQL("jsonb_build_array({})").format(sql.SQL(", ").join(parts))


_TYPES = """
SELECT format('%%I.%%I', n.nspname, t.typname), coalesce(nullif(t.typbasetype, 0), t.oid)::regtype::text
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE a.attrelid = %s::regclass AND a.attname = ANY(%s) ORDER BY a.attnum
"""


def _value(tp: TablePlan, image: str, col: str, typ: tuple[str, str]) -> sql.Composable:
    """The captured value as the target type: its input function reads wal2json's text, as
    jsonb_populate_record would (json/jsonb keep the JSON value; JSON null is SQL NULL). The cast
    leaves out the typmod: the INSERT's assignment applies it (an over-long varchar is an error,
    as with the input function, not silently cut as an explicit cast would)."""
    tname, base = sql.SQL(typ[0]), typ[1]
    if base in ("json", "jsonb"):
        return sql.SQL("nullif({}->{}, 'null')::{}").format(sql.SQL(image), sql.Literal(col), tname)
    if tp.fold.columns.get(col) == "bytea":  # wal2json sends bytea as bare hex
        return sql.SQL("('\\x' || ({}->>{}))::{}").format(sql.SQL(image), sql.Literal(col), tname)
    return sql.SQL("({}->>{})::{}").format(sql.SQL(image), sql.Literal(col), tname)


def _select(conn: psycopg.Connection, tp: TablePlan, st: Stage) -> list[sql.Composable]:
    """Per target column j: n{j} (final value; a delete keeps only its key), b{j}, x{j}."""
    names = [f"n{j}" for j in range(len(st.sources))]
    types = conn.execute(_TYPES, (st.ident.as_string(conn), names)).fetchall()
    out: list[sql.Composable] = [sql.SQL("op, lsn, 0")]
    for c, typ in zip(st.sources, types):
        key, b = c in tp.fold.pk, _value(tp, "base", c, typ)
        n = sql.SQL("CASE WHEN op = 'D' THEN {b} ELSE {f} END" if key else
                    "CASE WHEN op = 'D' THEN NULL ELSE {f} END").format(
            b=b, f=_value(tp, "final", c, typ))
        x = sql.SQL("CASE op WHEN 'I' THEN final ? {c} WHEN 'U' THEN {chg} ELSE false END").format(
            c=sql.Literal(c), chg=sql.SQL("false" if key else "final->{c} IS DISTINCT FROM base->{c}").format(
                c=sql.Literal(c)))
        out += [n, b, x]
    return out


def stage(conn: psycopg.Connection, tp: TablePlan, n: int) -> Stage:
    """Fold relation `tp` in the server and fill its staging table (no-op updates left out)."""
    f = tp.fold
    assert isinstance(f, SqlTableFold)
    sources = list(tp.colmap)
    st = Stage(tp, f"_pgcarry_stage_{n}", [tp.colmap[c] for c in sources], sources)
    create(conn, st)
    net = _id(f"_pgcarry_net_{n}")
    conn.execute(sql.SQL(_NET).format(net=net, raw=_id(RAW), okey=_keyexpr("old", f.pk),
                                      nkey=_keyexpr("new", f.pk, "old")),
                 {"rel": f.relation, "after": f.truncate_ord or 0})
    nonkey = [c for c in sources if c not in f.pk]
    changed = sql.SQL(" OR ").join(
        sql.SQL("final->{c} IS DISTINCT FROM base->{c}").format(c=sql.Literal(c)) for c in nonkey
    ) if nonkey else sql.SQL("false")
    conn.execute(sql.SQL("INSERT INTO {s} SELECT {row} FROM {net} n WHERE n.op IS NOT NULL AND "
                         "(n.op <> 'U' OR {chg})").format(
        s=st.ident, row=sql.SQL(", ").join(_select(conn, tp, st)), net=net, chg=changed))
    _summarise(conn, st, f, net)
    return st


def _summarise(conn: psycopg.Connection, st: Stage, f: SqlTableFold, net: sql.Identifier) -> None:
    counts = dict(conn.execute(sql.SQL("SELECT coalesce(op, 'vanished'), count(*) FROM {} GROUP BY 1")
                               .format(net)).fetchall())
    staged = dict(conn.execute(sql.SQL("SELECT op, count(*) FROM {} GROUP BY 1").format(st.ident))
                  .fetchall())
    f.vanished = counts.get("vanished", 0)
    f.net = {INSERT: staged.get("I", 0), UPDATE: staged.get("U", 0), DELETE: staged.get("D", 0),
             "noop": counts.get("U", 0) - staged.get("U", 0)}
    st.rows = sum(staged.values())
    xs = sql.SQL(", ").join(sql.SQL("coalesce(bool_or({}), false)").format(_id(f"x{j}"))
                            for j in range(len(st.columns)))
    flags = conn.execute(sql.SQL("SELECT {} FROM {} WHERE op = 'U'").format(xs, st.ident)).fetchone()
    st.changed = {c for c, hit in zip(st.columns, flags or ()) if hit}
    pats = conn.execute(sql.SQL("SELECT DISTINCT ARRAY[{}] FROM {} WHERE op = 'I'").format(
        sql.SQL(", ").join(_id(f"x{j}") for j in range(len(st.columns))), st.ident)).fetchall()
    for (pat,) in pats:
        st.signatures[frozenset(c for c, p in zip(st.sources, pat) if p)] = len(st.signatures)
    conn.execute(sql.SQL("ANALYZE {}").format(st.ident))
