"""Conflict detection: set-wise questions to the target about the staged effects.

Row-level (a captured insert whose key exists, an update or delete whose row is gone), column-level
(a column both production and the test side changed), table-level (a captured TRUNCATE), and
values wal2json could not carry (NaN/±Infinity arrive as null).
Each conflict carries table, key, LSN and the decision its policy takes.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pgcarry.replay.plan import Conflict, TablePlan
from pgcarry.replay.policy import conflict_sql, table_decision
from pgcarry.replay.stage import Stage
from pgcarry.schemas.lsn import Lsn

_KINDS = {"I": "insert-exists", "U": "update-missing", "D": "delete-missing"}


def _rows(conn: psycopg.Connection, st: Stage, ops: str = "IUD") -> list[Conflict]:
    rules = st.tp.rules
    out = []
    for op, kind in _KINDS.items():
        if op not in ops:
            continue
        exists = sql.SQL("" if op == "I" else "NOT ") + sql.SQL("EXISTS")
        q = sql.SQL("SELECT {k}, s.lsn FROM {s} s WHERE s.op = %s AND {e} "
                    "(SELECT 1 FROM {t} t WHERE {on}) ORDER BY s.lsn").format(
            k=st.key_select(), s=st.ident, e=exists, t=st.target, on=st.key_join())
        decision = table_decision(getattr(rules, kind.replace("-", "_")), kind)
        for *key, lsn in conn.execute(q, (op,)):
            out.append(Conflict(st.tp.relation, tuple(key), Lsn(lsn), kind, decision))
    return out


def _columns(conn: psycopg.Connection, st: Stage) -> list[Conflict]:
    tp = st.tp
    cols = [c for c in st.columns if c in st.changed]
    if not cols or not tp.full_identity:
        return []
    flags = [sql.SQL("({x} AND {c})").format(
        x=st.col("x", c), c=conflict_sql(sql.Identifier("t", c), st.col("b", c), st.col("n", c),
                                         tp.text_compare(c)))
        for c in cols]
    q = sql.SQL("SELECT {k}, s.lsn, ARRAY[{f}] FROM {s} s JOIN {t} t ON {on} "
                "WHERE s.op = 'U' AND ({any}) ORDER BY s.lsn").format(
        k=st.key_select(), f=sql.SQL(", ").join(flags), s=st.ident, t=st.target,
        on=st.key_join(), any=sql.SQL(" OR ").join(flags))
    out = []
    for *key, lsn, hits in conn.execute(q):
        for c, hit in zip(cols, hits):
            if hit:
                out.append(Conflict(tp.relation, tuple(key), Lsn(lsn), "column", tp.policy(c), c))
    return out


_SPECIAL = ("numeric", "decimal", "double precision", "real", "float")


def lost_values(conn: psycopg.Connection, st: Stage, ops: tuple[str, ...] = ("I", "U")
                ) -> list[Conflict]:
    """A null that wal2json sent for a numeric/float column the target declares NOT NULL was NaN
    or ±Infinity on production (JSON cannot carry them): writing null or failing later is wrong."""
    tp, out = st.tp, []
    assert tp.target is not None
    if not tp.nan_as_null:  # captured with numbers as text: a null is a NULL
        return out
    notnull = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnotnull AND attnum > 0",
        (tp.target.oid,))}
    for src, col in zip(st.sources, st.columns):
        if col not in notnull or not (tp.fold.columns.get(src) or "").startswith(_SPECIAL):
            continue
        q = sql.SQL("SELECT {k}, s.lsn FROM {s} s WHERE s.op = ANY(%s) AND {x} AND {n} IS NULL "
                    "ORDER BY s.lsn").format(k=st.key_select(), s=st.ident, x=st.col("x", col),
                                             n=st.col("n", col))
        for *key, lsn in conn.execute(q, (list(ops),)):
            out.append(Conflict(tp.relation, tuple(key), Lsn(lsn), "lost-value", "fail", col))
    return out


def truncates(tp: TablePlan) -> list[Conflict]:
    if tp.fold.truncated_at is None:
        return []
    return [Conflict(tp.relation, "*", tp.fold.truncated_at, "truncate",
                     table_decision(tp.rules.truncate, "truncate"))]


def detect(conn: psycopg.Connection, st: Stage) -> list[Conflict]:
    """Every conflict of one staged relation, in LSN order per kind."""
    return truncates(st.tp) + _rows(conn, st) + _columns(conn, st) + lost_values(conn, st)


def insert_conflicts(conn: psycopg.Connection, st: Stage) -> list[Conflict]:
    """The conflicts of the staged inserts alone (keys that exist, values wal2json lost): asked
    after deletes and updates already ran, when only the inserts were staged late."""
    return _rows(conn, st, "I") + lost_values(conn, st, ("I",))
