"""Mode `txn`: replay transaction by transaction in commit order, one statement per change.

The same policies as mode `net`, decided per event: an update writes the columns that event
changed, merged with the target row; a key whose captured insert was kept as the target's row
(insert-exists = target-wins) or whose update was skipped ignores its later events, as in `net`.
A relation without a key changes one row equal to each event's old image (replay/keyless.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from pgcarry import progress as prog
from pgcarry.errors import ConflictError, ReplayError
from pgcarry.replay import keyless
from pgcarry.replay.plan import Plan, TablePlan, key_label
from pgcarry.replay.policy import merge_sql
from pgcarry.schemas.change import DELETE, INSERT, TRUNCATE, UPDATE, Change, Transaction

_id = sql.Identifier


def _target(tp: TablePlan) -> sql.Identifier:
    assert tp.target is not None
    return _id(*tp.target.ident)


def _where(tp: TablePlan) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(_id(c), sql.Placeholder(f"k{i}"))
                                 for i, c in enumerate(tp.key))


def _insert_sql(tp: TablePlan, cols: tuple[str, ...]) -> sql.Composed:
    assert tp.target is not None
    ov = " OVERRIDING SYSTEM VALUE" if any(tp.target.columns[c].identity == "a" for c in cols) else ""
    rest = [c for c in cols if c not in tp.key]
    key = sql.SQL(", ").join(map(_id, tp.key))
    oc: sql.Composable = sql.SQL("")
    policy = tp.rules.insert_exists
    if policy == "target-wins" or (policy == "source-wins" and not rest):
        oc = sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(key)
    elif policy == "source-wins":
        oc = sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(key, sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=_id(c)) for c in rest))
    return sql.SQL("INSERT INTO {t} ({c}){ov} VALUES ({v}){oc}").format(
        t=_target(tp), c=sql.SQL(", ").join(map(_id, cols)), ov=sql.SQL(ov),
        v=sql.SQL(", ").join(sql.Placeholder(f"v{i}") for i in range(len(cols))), oc=oc)


def _update_sql(tp: TablePlan, cols: tuple[str, ...]) -> sql.Composed:
    sets = [sql.SQL("{c} = {m}").format(c=_id(c), m=merge_sql(
        tp.policy(c), _id(c), sql.Placeholder(f"b{i}"), sql.Placeholder(f"n{i}"), tp.text_compare(c)))
        for i, c in enumerate(cols)]
    return sql.SQL("UPDATE {t} SET {s} WHERE {w}").format(
        t=_target(tp), s=sql.SQL(", ").join(sets), w=_where(tp))


def _delete_sql(tp: TablePlan) -> sql.Composed:
    return sql.SQL("DELETE FROM {t} WHERE {w}").format(t=_target(tp), w=_where(tp))


class _Applier:
    def __init__(self, conn: psycopg.Connection, plan: Plan) -> None:
        self.conn, self.plan = conn, plan
        self.by_source = {tp.source: tp for tp in plan.tables.values()}
        self.applied: dict[str, dict[str, int]] = {
            r: {"insert": 0, "update": 0, "delete": 0, "reinsert": 0} for r in plan.tables}
        self.kept: set[tuple[str, tuple[Any, ...]]] = set()  # keys whose later events are ignored
        self._sql: dict[tuple[Any, ...], sql.Composed] = {}
        self.rows = {tp.relation: keyless.Rows(conn, tp) for tp in plan.tables.values() if tp.keyless}

    def _q(self, build: Callable[..., sql.Composed], tp: TablePlan, *args: Any) -> sql.Composed:
        k = (build, id(tp), *args)
        if k not in self._sql:
            self._sql[k] = build(tp, *args)
        return self._sql[k]

    def _key(self, tp: TablePlan, image: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(image[c] for c in tp.fold.pk)

    def _keyparams(self, tp: TablePlan, key: tuple[Any, ...]) -> dict[str, Any]:
        return {f"k{i}": tp.value(c, v) for i, (c, v) in enumerate(zip(tp.fold.pk, key))}

    def insert(self, tp: TablePlan, image: dict[str, Any], count: str = "insert") -> None:
        cols = [(tp.colmap[c], tp.value(c, v)) for c, v in image.items() if c in tp.colmap]
        q = self._q(_insert_sql, tp, tuple(c for c, _ in cols))
        n = self.conn.execute(q, {f"v{i}": v for i, (_, v) in enumerate(cols)}).rowcount
        if n == 0:
            self.kept.add((tp.source, self._key(tp, image)))
        self.applied[tp.relation][count] += n

    def update(self, tp: TablePlan, ch: Change) -> None:
        old, new = ch.old, ch.new
        if self._key(tp, new | {c: old[c] for c in tp.fold.pk if c not in new}) != self._key(tp, old):
            self.delete(tp, old)
            self.insert(tp, {**old, **new})
            return
        changed = [c for c, v in new.items() if c in tp.colmap and c not in tp.fold.pk
                   and (c not in old or old[c] != v)]
        if not changed:
            return
        params = self._keyparams(tp, self._key(tp, old))
        for i, c in enumerate(changed):
            params[f"b{i}"], params[f"n{i}"] = tp.value(c, old.get(c)), tp.value(c, new[c])
        q = self._q(_update_sql, tp, tuple(tp.colmap[c] for c in changed))
        if self.conn.execute(q, params).rowcount:
            self.applied[tp.relation]["update"] += 1
        elif tp.rules.update_missing == "reinsert":
            self.insert(tp, {**old, **new}, "reinsert")
        elif tp.rules.update_missing == "fail":
            raise ConflictError("update-missing conflict", table=tp.relation,
                                key=key_label(tp.key_text(old)),
                                lsn=ch.lsn, hint="set update-missing = \"skip\" or \"reinsert\"")
        else:
            self.kept.add((tp.source, self._key(tp, old)))

    def delete(self, tp: TablePlan, old: dict[str, Any]) -> None:
        n = self.conn.execute(self._q(_delete_sql, tp), self._keyparams(tp, self._key(tp, old))).rowcount
        self.applied[tp.relation]["delete"] += n

    def change(self, ch: Change) -> None:
        tp = self.by_source.get(ch.relation)
        if tp is None:
            return
        if ch.action == TRUNCATE:
            self.conn.execute(sql.SQL("TRUNCATE {}").format(_target(tp)))
            self.kept = {k for k in self.kept if k[0] != tp.source}
            return
        if tp.keyless:
            self.keyless(self.rows[tp.relation], ch)
            return
        image = ch.new if ch.action == INSERT else ch.old
        if (tp.source, self._key(tp, image)) in self.kept:
            if ch.action == DELETE:
                self.kept.discard((tp.source, self._key(tp, image)))
            return
        if ch.action == INSERT:
            self.insert(tp, image)
        elif ch.action == UPDATE:
            self.update(tp, ch)
        elif ch.action == DELETE:
            self.delete(tp, image)

    @staticmethod
    def keyless(rows: keyless.Rows, ch: Change) -> None:
        if ch.action == INSERT:
            rows.insert(ch.new)
        elif ch.action == UPDATE:
            rows.update(ch.lsn.value, ch.old, {**ch.old, **ch.new})
        elif ch.action == DELETE:
            rows.delete(ch.lsn.value, ch.old)

    def done(self) -> dict[str, dict[str, int]]:
        """What was applied per relation; the keyless relations' conflicts go to the plan."""
        for rel, rows in self.rows.items():
            self.applied[rel] = rows.applied
            self.plan.conflicts += rows.conflicts
        return self.applied


def apply(conn: psycopg.Connection, plan: Plan, txns: list[Transaction],
          task: prog.Task) -> dict[str, dict[str, int]]:
    """Replay `txns` in commit order, one statement per change."""
    a = _Applier(conn, plan)
    for n, t in enumerate(txns, 1):
        for ch in t.changes:
            try:
                a.change(ch)
            except psycopg.Error as e:
                raise ReplayError(f"{ch.action} failed: {e.diag.message_primary or e}",
                                  table=ch.relation, lsn=ch.lsn,
                                  hint="nothing was changed; fix the target or the policy") from None
        if n % 100 == 0:
            task.update(n)
    return a.done()
