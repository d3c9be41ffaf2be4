"""Relations without a key (REPLICA IDENTITY FULL), replayed as native logical replication,
pgcopydb and Debezium do: each captured UPDATE or DELETE changes exactly ONE target row equal to
its old image (NULL-safe; a type without btree equality compared as text), found by ctid, one per
change in commit order, so duplicate rows go one per change. Where no row is equal,
update-missing / delete-missing decide. Mode `net` first pairs updates and deletes with rows
inserted in the window (fold.py); the rest run against the target, then the inserts are COPYed.

For verify, replay first records how many target rows equal each row image the log names: the
relation's final multiset of rows can then be checked image by image.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.errors import ConflictError
from pgcarry.replay import journal, stage
from pgcarry.replay.fold import KeylessOp, TableFold, image_sig
from pgcarry.replay.plan import Conflict, Key, TablePlan, as_text
from pgcarry.replay.policy import table_decision
from pgcarry.schemas.change import DELETE, UPDATE
from pgcarry.schemas.lsn import Lsn

_id = sql.Identifier
_KIND = {UPDATE: "update-missing", DELETE: "delete-missing"}


def image_key(tp: TablePlan, image: dict[str, Any]) -> Key:
    """A row of a keyless relation as text: its conflicts' key."""
    return tuple(as_text(tp.value(c, image.get(c))) for c in tp.colmap)


class Rows:
    """The statements that find, change, delete and insert single rows of one keyless relation,
    with what they applied and the conflicts met."""

    def __init__(self, conn: psycopg.Connection, tp: TablePlan) -> None:
        assert tp.target is not None
        self.conn, self.tp, self.target = conn, tp, _id(*tp.target.ident)
        self.applied = {"insert": 0, "update": 0, "delete": 0, "reinsert": 0}
        self.conflicts: list[Conflict] = []
        self._sql: dict[tuple[Any, ...], sql.Composed] = {}

    def _match(self, old: dict[str, Any]) -> tuple[sql.Composable, list[Any], tuple[Any, ...]]:
        """`WHERE` of the rows equal to `old`: = (indexable) or IS NULL per column, as text for a
        type without btree equality; its parameters; its shape (for the statement cache)."""
        parts, params, shape = [], [], []
        for src, col in self.tp.colmap.items():
            v = old.get(src)
            if v is None:
                parts.append(sql.SQL("{} IS NULL").format(_id(col)))
            elif self.tp.text_compare(col):
                parts.append(sql.SQL("{}::text = %s::text").format(_id(col)))
            else:
                parts.append(sql.SQL("{} = %s").format(_id(col)))
            if v is not None:
                params.append(self.tp.value(src, v))
            shape.append(v is None)
        return sql.SQL(" AND ").join(parts) or sql.SQL("true"), params, tuple(shape)

    def _one(self, where: sql.Composable) -> sql.Composable:
        return sql.SQL("(tableoid, ctid) = (SELECT tableoid, ctid FROM {} WHERE {} LIMIT 1)").format(
            self.target, where)

    def count(self, image: dict[str, Any]) -> int:
        where, params, _ = self._match(image)
        q = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self.target, where)
        return int(self.conn.execute(q, params).fetchone()[0])  # type: ignore[index]

    def insert(self, image: dict[str, Any], count: str = "insert") -> None:
        cols = [(self.tp.colmap[c], self.tp.value(c, v)) for c, v in image.items() if c in self.tp.colmap]
        key = ("I", tuple(c for c, _ in cols))
        if key not in self._sql:
            assert self.tp.target is not None
            ov = any(self.tp.target.columns[c].identity == "a" for c, _ in cols)
            self._sql[key] = sql.SQL("INSERT INTO {} ({}){} VALUES ({})").format(
                self.target, sql.SQL(", ").join(_id(c) for c, _ in cols),
                sql.SQL(" OVERRIDING SYSTEM VALUE" if ov else ""),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)))
        self.conn.execute(self._sql[key], [v for _, v in cols])
        self.applied[count] += 1

    def update(self, lsn: int, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Change one row equal to `old` into `new` (the full new image)."""
        sets = [c for c in self.tp.colmap if new.get(c) != old.get(c)]
        if not sets:
            return
        where, params, shape = self._match(old)
        key = ("U", shape, tuple(sets))
        if key not in self._sql:
            self._sql[key] = sql.SQL("UPDATE {} SET {} WHERE {}").format(
                self.target, sql.SQL(", ").join(sql.SQL("{} = %s").format(_id(self.tp.colmap[c]))
                                                for c in sets), self._one(where))
        values = [self.tp.value(c, new.get(c)) for c in sets]
        if self.conn.execute(self._sql[key], values + params).rowcount:
            self.applied["update"] += 1
        else:
            self._missing(UPDATE, lsn, old, new)

    def delete(self, lsn: int, old: dict[str, Any]) -> None:
        where, params, shape = self._match(old)
        key = ("D", shape)
        if key not in self._sql:
            self._sql[key] = sql.SQL("DELETE FROM {} WHERE {}").format(self.target, self._one(where))
        if self.conn.execute(self._sql[key], params).rowcount:
            self.applied["delete"] += 1
        else:
            self._missing(DELETE, lsn, old, {})

    def op(self, op: KeylessOp) -> None:
        if op.op == UPDATE:
            self.update(op.lsn, op.old, op.new)
        else:
            self.delete(op.lsn, op.old)

    def _missing(self, action: str, lsn: int, old: dict[str, Any], new: dict[str, Any]) -> None:
        c = missing(self.tp, action, lsn, old)
        self.conflicts.append(c)
        if c.decision == "fail":
            raise ConflictError(f"{c.kind} conflict: no row equal to the old image", table=c.table,
                                key=c.label, lsn=c.lsn,
                                hint=f"nothing was changed; set {c.kind} = \"skip\""
                                     + (" or \"reinsert\"" if action == UPDATE else "")
                                     + " for the table in [replay.tables]")
        if c.decision == "reinsert":
            self.insert(new, "reinsert")


def missing(tp: TablePlan, action: str, lsn: int, old: dict[str, Any]) -> Conflict:
    kind = _KIND[action]
    rule = tp.rules.update_missing if action == UPDATE else tp.rules.delete_missing
    return Conflict(tp.relation, image_key(tp, old), Lsn(lsn), kind, table_decision(rule, kind))


def apply(conn: psycopg.Connection, tp: TablePlan) -> Rows:
    """Mode `net`: the updates and deletes no insert matched, one row each in commit order, then
    the inserts by COPY (one per set of sent columns)."""
    rows = Rows(conn, tp)
    for op in tp.fold.ops:
        rows.op(op)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for image in tp.fold.inserts():
        groups.setdefault(tuple(c for c in image if c in tp.colmap), []).append(image)
    for sent, images in groups.items():
        stage.copy_into(conn, rows.target, [tp.colmap[c] for c in sent],
                        ([tp.value(c, image[c]) for c in sent] for image in images))
        rows.applied["insert"] += len(images)
    return rows


def predict(conn: psycopg.Connection, tp: TablePlan) -> list[Conflict]:
    """The dry run's conflicts: each update or delete meets a row if the target holds one more
    row equal to its old image than the changes before it took (and made)."""
    rows, have, out = Rows(conn, tp), {}, []  # image_sig -> rows equal to it, as changed so far

    def held(image: dict[str, Any]) -> int:
        s = image_sig(image)
        if s not in have:
            have[s] = 0 if tp.fold.truncated_at else rows.count(image)
        return have[s]

    for op in tp.fold.ops:
        c = None if held(op.old) else missing(tp, op.op, op.lsn, op.old)
        if c is None:
            have[image_sig(op.old)] -= 1
        else:
            out.append(c)
        if op.op == UPDATE and (c is None or c.decision == "reinsert"):
            held(op.new)
            have[image_sig(op.new)] += 1
    return out


def _images(conn: psycopg.Connection, tp: TablePlan,
            images: Iterable[tuple[dict[str, Any], int, int]]) -> tuple[sql.Identifier, sql.Composable]:
    """A temporary table of row images (with a count `_d` and a run `_run` each) typed like the
    target's columns, and the row text expression of its alias `i`."""
    assert tp.target is not None
    name = _id("_pgcarry_images")
    cols = list(tp.colmap.values())
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    typed = [sql.SQL("t.{}::{}").format(_id(c), sql.SQL(tp.target.columns[c].stage_type))
             if tp.target.columns[c].stage_type else _id("t", c) for c in cols]
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, 0::bigint AS _d, "
                         "0::bigint AS _run FROM {} t WITH NO DATA").format(
        name, sql.SQL(", ").join(sql.SQL("{} AS {}").format(v, _id(c)) for v, c in zip(typed, cols)),
        _id(*tp.target.ident)))
    stage.copy_into(conn, name, cols + ["_d", "_run"], (
        [tp.value(c, image.get(c)) for c in tp.colmap] + [d, run] for image, d, run in images))
    return name, row_text(tp, "i")


def row_text(tp: TablePlan, alias: str) -> sql.Composable:
    """A row of the relation's replayed columns as one text (record output: NULL-safe)."""
    return sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(_id(alias, c) for c in tp.colmap.values()))


def snapshot(conn: psycopg.Connection, tp: TablePlan, run: int) -> None:
    """Record, per row image the fold names, how many target rows equal it before replay."""
    f = tp.fold
    named = [(i, 0, run) for i in f.inserts()] + [(i, 0, run) for o in f.ops for i in (o.old, o.new) if i]
    images, text = _images(conn, tp, named)
    assert tp.target is not None
    conn.execute(sql.SQL(
        "INSERT INTO {k} (relation, run, image, n) SELECT %s, %s, i.img, count(t.ctid) "
        "FROM (SELECT DISTINCT {text} AS img FROM {images} i) i "
        "LEFT JOIN {target} t ON {t} = i.img GROUP BY i.img").format(
        k=_id(journal.SCHEMA, journal.KEYLESS_COUNTS), text=text, images=images,
        target=_id(*tp.target.ident), t=row_text(tp, "t")), (tp.relation, run))


def expected(fold: TableFold, decided: dict[str, str]) -> list[tuple[dict[str, Any], int]]:
    """How one run changed the number of rows equal to each image: +1 per row it inserted (as
    the window left it); per update or delete no insert matched, -1 for the old image and +1 for
    the new — unless it met no row (`decided`, by LSN: skip changes nothing, reinsert adds)."""
    out = [(image, 1) for image in fold.inserts()]
    for op in fold.ops:
        decision = decided.get(str(Lsn(op.lsn)))
        if decision is None:
            out.append((op.old, -1))
        if op.op == UPDATE and decision in (None, "reinsert"):
            out.append((op.new, 1))
    return out


Run = tuple[int, TableFold, dict[str, str]]  # journal run id, its fold, its missing-row decisions


def check(conn: psycopg.Connection, tp: TablePlan, runs: list[Run]) -> tuple[bool, str]:
    """The relation's rows against what the runs should have left: per row image, the count
    recorded before the latest run that recorded it (0 after a TRUNCATE) plus the changes from
    that run on; an image no run recorded (insert-only runs) must be there at least as often as
    it was inserted."""
    assert tp.target is not None
    named = [(image, d, run) for run, fold, decided in runs for image, d in expected(fold, decided)]
    images, text = _images(conn, tp, named)
    deltas: dict[str, dict[int, int]] = {}
    for img, run, d in conn.execute(sql.SQL("SELECT {}, i._run, sum(i._d) FROM {} i GROUP BY 1, 2")
                                    .format(text, images)):
        deltas.setdefault(img, {})[run] = int(d)
    now = dict(conn.execute(sql.SQL(
        "SELECT x.img, count(t.ctid) FROM (SELECT DISTINCT {} AS img FROM {} i) x "
        "LEFT JOIN {} t ON {} = x.img GROUP BY x.img").format(
        text, images, _id(*tp.target.ident), row_text(tp, "t"))).fetchall())
    anchors: dict[str, list[tuple[int, int]]] = {}
    for img, run, n in conn.execute(sql.SQL(
            "SELECT image, run, n FROM {} WHERE relation = %s AND image = ANY(%s)").format(
            _id(journal.SCHEMA, journal.KEYLESS_COUNTS)), (tp.relation, list(deltas))):
        anchors.setdefault(img, []).append((run, n))
    wiped = [(run, 0) for run, fold, _ in runs if fold.truncated_at]
    bad, exact, least = [], 0, 0
    for img, by_run in sorted(deltas.items()):
        known = anchors.get(img, []) + wiped
        if known:
            since, base = max(known)
            want, exact = base + sum(d for r, d in by_run.items() if r >= since), exact + 1
            if now[img] != want:
                bad.append(f"row {img}: {now[img]} in the target, {want} expected")
        elif all(d >= 0 for d in by_run.values()):
            want, least = sum(by_run.values()), least + 1
            if now[img] < want:
                bad.append(f"row {img}: {now[img]} in the target, at least {want} expected")
    if bad:
        return False, "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
    return True, f"{exact} row images exact, {least} present at least as often as inserted"
