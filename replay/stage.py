"""Staging: one temporary table per replayed relation holding its net effects, loaded by COPY.

Its columns take the target's own types (``CREATE TEMP TABLE … AS SELECT … WITH NO DATA``), so
COPY parses production's text values with the target's input functions: per target column j,
``n{j}`` is production's final value, ``b{j}`` its value before the window, ``x{j}`` whether
production changed it (for inserts: whether it was sent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.replay.plan import TablePlan
from pgcarry.schemas.change import INSERT, UPDATE


@dataclass
class Stage:
    """The staging table of one relation and the SQL pieces that refer to it."""

    tp: TablePlan
    name: str
    columns: list[str]  # target columns, index j -> n{j}/b{j}/x{j}
    sources: list[str]  # captured column for each target column
    signatures: dict[frozenset[str], int] = field(default_factory=dict)  # insert column sets
    changed: set[str] = field(default_factory=set)  # target columns any update changes
    rows: int = 0

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.name)

    @property
    def target(self) -> sql.Identifier:
        assert self.tp.target is not None
        return sql.Identifier(*self.tp.target.ident)

    def col(self, prefix: str, name: str, alias: str = "s") -> sql.Composable:
        return sql.Identifier(alias, f"{prefix}{self.columns.index(name)}")

    def key_join(self, t: str = "t", s: str = "s") -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(t, c), self.col("n", c, s)) for c in self.tp.key)

    def key_select(self, s: str = "s") -> sql.Composable:
        return sql.SQL(", ").join(self.col("n", c, s) for c in self.tp.key)


def create(conn: psycopg.Connection, st: Stage) -> None:
    parts = [sql.SQL("NULL::text AS op, 0::bigint AS lsn, 0 AS sig")]
    for j, c in enumerate(st.columns):
        parts.append(sql.SQL("t.{c} AS {n}, t.{c} AS {b}, true AS {x}").format(
            c=sql.Identifier(c), n=sql.Identifier(f"n{j}"), b=sql.Identifier(f"b{j}"),
            x=sql.Identifier(f"x{j}")))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} t WITH NO DATA")
                 .format(st.ident, sql.SQL(", ").join(parts), st.target))


def _row(st: Stage, r: Any) -> list[Any]:
    v = st.tp.value
    out: list[Any] = [r.op, r.last_lsn.value if r.last_lsn else 0, 0]
    if r.op == INSERT:
        sig = frozenset(c for c in st.sources if c in r.new)
        out[2] = st.signatures.setdefault(sig, len(st.signatures))
        for c in st.sources:
            out += [v(c, r.new.get(c)), None, c in r.new]
    elif r.op == UPDATE:
        image = r.final_image()
        for c, tc in zip(st.sources, st.columns):
            x = c in r.changed
            if x:
                st.changed.add(tc)
            out += [v(c, image.get(c)), v(c, r.base.get(c)), x]
    else:  # a delete keeps its key in n{j}: every join reads keys from there
        for c in st.sources:
            b = v(c, r.base.get(c))
            out += [b if c in st.tp.fold.pk else None, b, False]
    return out


def load(conn: psycopg.Connection, tp: TablePlan, n: int,
         progress: Callable[[str], None] | None = None) -> Stage:
    """Create and fill the staging table of `tp` (no-op updates are left out)."""
    sources = list(tp.colmap)
    st = Stage(tp, f"_pgcarry_stage_{n}", [tp.colmap[c] for c in sources], sources)
    create(conn, st)
    names = ["op", "lsn", "sig"] + [f"{p}{j}" for j in range(len(sources)) for p in "nbx"]
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        st.ident, sql.SQL(", ").join(map(sql.Identifier, names)))
    with conn.cursor() as cur, cur.copy(copy) as cp:
        for r in tp.fold.rows.values():
            if r.op == UPDATE and not r.changed:
                continue
            cp.write_row(_row(st, r))
            st.rows += 1
            if progress and st.rows % 20000 == 0:
                progress(f"staging {tp.relation}: {st.rows}")
    conn.execute(sql.SQL("ANALYZE {}").format(st.ident))
    return st
