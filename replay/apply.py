"""Set-wise apply of staged net effects (mode `net`): DELETE … USING, UPDATE … FROM with the
three-way column merge, INSERT … SELECT with the insert-exists policy, and the foreign-key
anti-joins that run before commit.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pgcarry.errors import ReplayError
from pgcarry.replay import journal
from pgcarry.replay.catalog import ForeignKey, TargetTable
from pgcarry.replay.policy import merge_sql
from pgcarry.replay.stage import Stage

_id = sql.Identifier


def snapshot_before(conn: psycopg.Connection, st: Stage, run: int) -> int:
    """Copy every target row the staged effects touch into the relation's pre-image table."""
    assert st.tp.target is not None
    before = journal.before_table(conn, st.tp.relation, st.target)
    have = set(journal.before_columns(conn, before))
    cols = [c for c in st.tp.target.columns if c in have]
    q = sql.SQL("INSERT INTO {b} ({c}, {run}) SELECT {tc}, %s FROM {t} t "
                "WHERE EXISTS (SELECT 1 FROM {s} s WHERE {on})").format(
        b=before, c=sql.SQL(", ").join(map(_id, cols)), run=_id(journal.RUN_COLUMN),
        tc=sql.SQL(", ").join(_id("t", c) for c in cols), t=st.target, s=st.ident, on=st.key_join())
    return conn.execute(q, (run,)).rowcount


def snapshot_truncated(conn: psycopg.Connection, table: TargetTable, run: int) -> int:
    target = _id(*table.ident)
    before = journal.before_table(conn, table.relation, target)
    have = set(journal.before_columns(conn, before))
    cols = [c for c in table.columns if c in have]
    q = sql.SQL("INSERT INTO {b} ({c}, {run}) SELECT {c}, %s FROM {t}").format(
        b=before, c=sql.SQL(", ").join(map(_id, cols)), run=_id(journal.RUN_COLUMN), t=target)
    return conn.execute(q, (run,)).rowcount


def deletes(conn: psycopg.Connection, st: Stage) -> int:
    q = sql.SQL("DELETE FROM {t} t USING {s} s WHERE s.op = 'D' AND {on}").format(
        t=st.target, s=st.ident, on=st.key_join())
    return conn.execute(q).rowcount


def updates(conn: psycopg.Connection, st: Stage) -> int:
    cols = [c for c in st.columns if c in st.changed]
    if not cols:
        return 0
    sets = [sql.SQL("{c} = CASE WHEN {x} THEN {m} ELSE {o} END").format(
        c=_id(c), x=st.col("x", c), o=_id("t", c),
        m=merge_sql(st.tp.policy(c), _id("t", c), st.col("b", c), st.col("n", c),
                    st.tp.text_compare(c))) for c in cols]
    q = sql.SQL("UPDATE {t} t SET {sets} FROM {s} s WHERE s.op = 'U' AND {on}").format(
        t=st.target, sets=sql.SQL(", ").join(sets), s=st.ident, on=st.key_join())
    return conn.execute(q).rowcount


def _overriding(st: Stage, cols: list[str]) -> sql.Composable:
    assert st.tp.target is not None
    ident = any(st.tp.target.columns[c].identity == "a" for c in cols)
    return sql.SQL(" OVERRIDING SYSTEM VALUE" if ident else "")


def reinserts(conn: psycopg.Connection, st: Stage) -> int:
    """update-missing = reinsert: production's full final image of rows gone from the target."""
    cols = list(st.columns)
    q = sql.SQL("INSERT INTO {t} ({c}){ov} SELECT {n} FROM {s} s WHERE s.op = 'U' "
                "AND NOT EXISTS (SELECT 1 FROM {t} t WHERE {on})").format(
        t=st.target, c=sql.SQL(", ").join(map(_id, cols)), ov=_overriding(st, cols),
        n=sql.SQL(", ").join(st.col("n", c) for c in cols), s=st.ident, on=st.key_join())
    return conn.execute(q).rowcount


def inserts(conn: psycopg.Connection, st: Stage) -> int:
    """One INSERT … SELECT per set of sent columns (absent columns take the target's default)."""
    total = 0
    policy = st.tp.rules.insert_exists
    for sig in st.signatures:
        cols = [tc for sc, tc in zip(st.sources, st.columns) if sc in sig]
        on_conflict = sql.SQL("")
        rest = [c for c in cols if c not in st.tp.key]
        key = sql.SQL(", ").join(map(_id, st.tp.key))
        if policy == "target-wins" or (policy == "source-wins" and not rest):
            on_conflict = sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(key)
        elif policy == "source-wins":
            on_conflict = sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(key, sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=_id(c)) for c in rest))
        sent = sql.SQL(" AND ").join(
            sql.SQL("{}{}").format(sql.SQL("" if sc in sig else "NOT "), st.col("x", tc))
            for sc, tc in zip(st.sources, st.columns))
        q = sql.SQL("INSERT INTO {t} ({c}){ov} SELECT {n} FROM {s} s WHERE s.op = 'I' AND {sent}"
                    "{oc}").format(sent=sent, 
            t=st.target, c=sql.SQL(", ").join(map(_id, cols)), ov=_overriding(st, cols),
            n=sql.SQL(", ").join(st.col("n", c) for c in cols), s=st.ident, oc=on_conflict)
        total += conn.execute(q).rowcount
    return total


def orphans(conn: psycopg.Connection, fk: ForeignKey, limit: int = 3) -> list[tuple[object, ...]]:
    """Up to `limit` child keys of `fk` with no parent row (MATCH SIMPLE: NULLs are fine)."""
    c_ident = _id(*fk.child.split(".", 1))
    p_ident = _id(*fk.parent.split(".", 1))
    q = sql.SQL("SELECT {cols} FROM {c} c WHERE {nn} AND NOT EXISTS "
                "(SELECT 1 FROM {p} p WHERE {on}) LIMIT %s").format(
        cols=sql.SQL(", ").join(_id("c", x) for x in fk.columns), c=c_ident, p=p_ident,
        nn=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(_id("c", x)) for x in fk.columns),
        on=sql.SQL(" AND ").join(sql.SQL("{} = {}").format(_id("p", r), _id("c", x))
                                 for x, r in zip(fk.columns, fk.ref_columns)))
    return [tuple(r) for r in conn.execute(q, (limit,))]


def touching(fkeys: list[ForeignKey], touched: set[str]) -> list[ForeignKey]:
    return [fk for fk in fkeys if fk.child in touched or fk.parent in touched]


def check_foreign_keys(conn: psycopg.Connection, fkeys: list[ForeignKey], touched: set[str]) -> int:
    """Anti-join every foreign key whose child or parent was touched; raise on the first orphan."""
    checked = touching(fkeys, touched)
    for fk in checked:
        found = orphans(conn, fk)
        if found:
            raise ReplayError(
                f"foreign key {fk.name} would be violated: {fk.child}({', '.join(fk.columns)}) "
                f"has no row in {fk.parent}", table=fk.child,
                key=", ".join(str(o) for o in found),
                hint="the referenced row is missing in the target (deleted on the test side, or "
                     "skipped by a policy); fix the data or the policy and replay again")
    return len(checked)
