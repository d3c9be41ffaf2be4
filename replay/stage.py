"""Staging: one temporary table per replayed relation holding its net effects, loaded by COPY.

Its columns take the target's own types (``CREATE TEMP TABLE … AS SELECT … WITH NO DATA``; a
domain's base type, so its NOT NULL or CHECK never refuses a staged NULL), so COPY parses
production's text values with the target's input functions: per target column j,
``n{j}`` is production's final value, ``b{j}`` its value before the window, ``x{j}`` whether
production changed it (for inserts: whether it was sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgcarry import progress as prog
from pgcarry.replay.plan import TablePlan, bytea_text
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
    held: list[Any] = field(default_factory=list)  # net inserts not staged (load(hold_inserts=True))

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
        """The key columns as text: keys leave the database in PostgreSQL's own text form (uuid,
        numeric, timestamps, bytea, arrays, composites), which every report and JSON can hold."""
        return sql.SQL(", ").join(sql.SQL("{}::text").format(self.col("n", c, s))
                                  for c in self.tp.key)


def create(conn: psycopg.Connection, st: Stage) -> None:
    assert st.tp.target is not None
    parts = [sql.SQL("NULL::text AS op, 0::bigint AS lsn, 0 AS sig")]
    for j, c in enumerate(st.columns):
        base = st.tp.target.columns[c].stage_type
        v = sql.SQL("t.{}::{}").format(sql.Identifier(c), sql.SQL(base)) if base else \
            sql.Identifier("t", c)
        parts.append(sql.SQL("{v} AS {n}, {v} AS {b}, true AS {x}").format(
            v=v, n=sql.Identifier(f"n{j}"), b=sql.Identifier(f"b{j}"), x=sql.Identifier(f"x{j}")))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} t WITH NO DATA")
                 .format(st.ident, sql.SQL(", ").join(parts), st.target))


class _Rows:
    """Builds the COPY rows of one staging table: per row op, lsn, sig, then n{j}…, b{j}…, x{j}…"""

    def __init__(self, st: Stage) -> None:
        self.st = st
        tp = st.tp
        self.sources = st.sources
        self.none = [None] * len(st.sources)
        self.false = [False] * len(st.sources)
        self.is_key = [c in tp.fold.pk for c in st.sources]
        self.sigs: dict[tuple[str, ...], tuple[int, list[bool], bool]] = {}
        # wal2json sends bytea as bare hex: only tables with a bytea column pay for the conversion
        self.hexed = {c for c in st.sources if tp.fold.columns.get(c) == "bytea"}

    def values(self, image: dict[str, Any]) -> list[Any]:
        vals = [image.get(c) for c in self.sources]
        if self.hexed:
            vals = [bytea_text(v) if c in self.hexed else v for c, v in zip(self.sources, vals)]
        return vals

    def signature(self, new: dict[str, Any]) -> tuple[int, list[bool], bool]:
        """The insert's set of sent columns as a number (one INSERT … SELECT per set), its flags,
        and whether the image holds exactly the staged columns in their order (the usual case:
        then its values are taken as they are)."""
        names = tuple(new)
        hit = self.sigs.get(names)
        if hit is None:
            sig = self.st.signatures.setdefault(frozenset(c for c in self.sources if c in new),
                                                len(self.st.signatures))
            aligned = names == tuple(self.sources) and not self.hexed
            hit = self.sigs[names] = (sig, [c in new for c in self.sources], aligned)
        return hit

    def inserted(self, new: dict[str, Any]) -> tuple[int, list[bool], list[Any]]:
        """An insert's signature, flags and values (n{j})."""
        sig, xs, aligned = self.signature(new)
        return sig, xs, list(new.values()) if aligned else self.values(new)

    def row(self, r: Any) -> list[Any]:
        if r.op == INSERT:
            sig, xs, vals = self.inserted(r.new)
            return [r.op, r.last_lsn, sig, *vals, *self.none, *xs]
        if r.op == UPDATE:
            xs = [c in r.changed for c in self.sources]
            for tc, x in zip(self.st.columns, xs):
                if x:
                    self.st.changed.add(tc)
            return [r.op, r.last_lsn, 0, *self.values(r.final_image()), *self.values(r.base), *xs]
        base = self.values(r.base)  # a delete keeps its key in n{j}: every join reads keys there
        return [r.op, r.last_lsn, 0, *[b if k else None for b, k in zip(base, self.is_key)], *base,
                *self.false]


def copy_into(conn: psycopg.Connection, table: sql.Composable, columns: list[str],
              rows: Iterable[Sequence[Any]]) -> None:
    """COPY `rows` into `columns` of `table`. Pass a generator: each row is built while the
    server parses the ones before it."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.cursor() as cur, cur.copy(copy) as cp:
        write = cp.write_row
        for row in rows:
            write(row)


def copy_rows(conn: psycopg.Connection, st: Stage, rows: Iterable[Any],
              task: prog.Task | None = None) -> None:
    """COPY the net effects `rows` into the staging table (no-op updates are left out)."""
    k = len(st.sources)
    names = ["op", "lsn", "sig"] + [f"{p}{j}" for p in "nbx" for j in range(k)]
    build = _Rows(st).row

    def staged() -> Iterator[list[Any]]:
        for r in rows:
            if r.op == UPDATE and not r.changed:
                continue
            yield build(r)
            st.rows += 1
            if task and st.rows % prog.EVERY == 0:
                task.advance(prog.EVERY)

    copy_into(conn, st.ident, names, staged())


def copy_held(conn: psycopg.Connection, st: Stage) -> int:
    """COPY the held net inserts straight into the target, one COPY per set of sent columns
    (absent columns take the target's default; COPY writes identity columns as given)."""
    build = _Rows(st)
    groups: dict[int, tuple[list[bool], list[Any]]] = {}
    for r in st.held:
        sig, xs, _ = build.signature(r.new)
        groups.setdefault(sig, (xs, []))[1].append(r.new)
    for xs, images in groups.values():
        cols = [c for c, x in zip(st.columns, xs) if x]
        vals = (build.inserted(new)[2] for new in images)
        copy_into(conn, st.target, cols, vals if all(xs) else
                  ([v for v, x in zip(row, xs) if x] for row in vals))
    return len(st.held)


def load(conn: psycopg.Connection, tp: TablePlan, n: int,
         task: prog.Task | None = None, *, hold_inserts: bool = False) -> Stage:
    """Create and fill the staging table of `tp`. With `hold_inserts`, net inserts stay in
    ``Stage.held`` for apply to COPY straight into the target (see apply.inserts)."""
    sources = list(tp.colmap)
    st = Stage(tp, f"_pgcarry_stage_{n}", [tp.colmap[c] for c in sources], sources)
    create(conn, st)
    rows: Iterable[Any] = tp.fold.rows.values()
    if hold_inserts:
        st.held = [r for r in rows if r.op == INSERT]
        rows = [r for r in tp.fold.rows.values() if r.op != INSERT]
    copy_rows(conn, st, rows, task)
    conn.execute(sql.SQL("ANALYZE {}").format(st.ident))
    return st
