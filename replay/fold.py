"""Fold a relation's captured events into one net effect per row (the `net` replay mode's core).

Pure logic, no database: insert+updates become one insert of the final image, insert+delete
vanishes, updates become one update of the columns production changed, a key change becomes a
delete of the old key plus an insert of the new one. A TRUNCATE discards what came before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pgcarry.errors import ReplayError
from pgcarry.schemas.change import DELETE, INSERT, TRUNCATE, UPDATE, Change
from pgcarry.schemas.lsn import Lsn

Key = tuple[Any, ...]


@dataclass
class RowEffect:
    """The net effect of a row's events: what replay does to the target row with this key."""

    op: str  # INSERT | UPDATE | DELETE
    key: Key
    new: dict[str, Any] = field(default_factory=dict)  # final image: columns production sent
    base: dict[str, Any] = field(default_factory=dict)  # production's image before the first event
    changed: set[str] = field(default_factory=set)  # UPDATE: columns whose net value differs
    first_lsn: Lsn | None = None
    last_lsn: Lsn | None = None
    events: int = 0

    def final_image(self) -> dict[str, Any]:
        """Production's final row as far as known: the base image overlaid with the new image."""
        return {**self.base, **self.new}


@dataclass
class TableFold:
    """The folded effects of one source relation."""

    relation: str
    pk: list[str]
    rows: dict[Key, RowEffect] = field(default_factory=dict)
    captured: Counter[str] = field(default_factory=Counter)  # raw I/U/D/T counts
    vanished: int = 0  # rows inserted and deleted inside the window
    truncated_at: Lsn | None = None
    partial_old: bool = False  # some old image lacked columns: not REPLICA IDENTITY FULL
    columns: dict[str, str] = field(default_factory=dict)  # every column seen -> wal2json type

    def count(self, op: str) -> int:
        return sum(1 for r in self.rows.values() if r.op == op and (op != UPDATE or r.changed))

    @property
    def noop_updates(self) -> int:
        return sum(1 for r in self.rows.values() if r.op == UPDATE and not r.changed)


def _changed(base: dict[str, Any], new: dict[str, Any], pk: list[str]) -> set[str]:
    """Columns whose new value differs from base; a column absent from base counts as changed."""
    return {c for c, v in new.items() if c not in pk and (c not in base or base[c] != v)}


class Folder:
    """Feed changes in commit order with ``add``; read ``tables`` at the end."""

    def __init__(self, pk_for: Callable[[Change], list[str]] | None = None) -> None:
        self.tables: dict[str, TableFold] = {}
        self._pk_for = pk_for or (lambda ch: ch.pk)

    def _table(self, ch: Change) -> TableFold:
        t = self.tables.get(ch.relation)
        if t is None:
            pk = self._pk_for(ch)
            if not pk and ch.action != TRUNCATE:
                raise ReplayError(
                    "captured relation has no primary key", table=ch.relation, lsn=ch.lsn,
                    hint="add a primary key, or set `ignore = true` for the table in [replay.tables]",
                )
            t = self.tables[ch.relation] = TableFold(ch.relation, pk)
        elif not t.pk and ch.action != TRUNCATE:
            t.pk = self._pk_for(ch)
        return t

    def add(self, ch: Change) -> None:
        t = self._table(ch)
        t.captured[ch.action] += 1
        if ch.action == TRUNCATE:
            t.rows.clear()
            t.truncated_at = ch.lsn
            return
        for name, typ in ch.types.items():
            t.columns.setdefault(name, typ)
        if ch.action == INSERT:
            self._insert(t, ch, ch.new)
        elif ch.action == UPDATE:
            self._update(t, ch)
        elif ch.action == DELETE:
            self._delete(t, ch, ch.old)
        else:
            raise ReplayError(f"unknown action {ch.action!r}", table=ch.relation, lsn=ch.lsn)

    @staticmethod
    def _key(t: TableFold, image: dict[str, Any], ch: Change) -> Key:
        try:
            return tuple(image[c] for c in t.pk)
        except KeyError as e:
            raise ReplayError(
                f"change lacks primary-key column {e.args[0]}", table=t.relation, lsn=ch.lsn
            ) from None

    def _insert(self, t: TableFold, ch: Change, image: dict[str, Any]) -> None:
        key = self._key(t, image, ch)
        prev = t.rows.get(key)
        if prev is None:
            t.rows[key] = RowEffect(INSERT, key, dict(image), {}, set(image), ch.lsn, ch.lsn, 1)
        elif prev.op == DELETE:  # deleted and inserted again: an update of the T0 row
            prev.op, prev.new = UPDATE, dict(image)
            prev.changed = _changed(prev.base, prev.new, t.pk)
            prev.last_lsn, prev.events = ch.lsn, prev.events + 1
        else:
            raise ReplayError("insert of a key that already exists in the stream",
                              table=t.relation, key=key, lsn=ch.lsn)

    def _update(self, t: TableFold, ch: Change) -> None:
        old, new = ch.old, ch.new
        if any(c not in old for c in new):
            t.partial_old = True
        old_key = self._key(t, old, ch) if old else self._key(t, new, ch)
        new_key = tuple(new.get(c, k) for c, k in zip(t.pk, old_key))
        if new_key != old_key:  # a primary-key change: delete the old key, insert the new one
            prev = t.rows.get(old_key)
            image = {**(prev.final_image() if prev else old), **new}
            self._delete(t, ch, old)
            self._insert(t, ch, image)
            return
        prev = t.rows.get(old_key)
        if prev is None:
            base = dict(old)
            t.rows[old_key] = RowEffect(UPDATE, old_key, {**base, **new}, base,
                                        _changed(base, new, t.pk), ch.lsn, ch.lsn, 1)
            return
        if prev.op == DELETE:
            raise ReplayError("update of a deleted row", table=t.relation, key=old_key, lsn=ch.lsn)
        prev.new.update(new)
        prev.last_lsn, prev.events = ch.lsn, prev.events + 1
        if prev.op == INSERT:
            prev.changed = set(prev.new)
        else:
            prev.changed = _changed(prev.base, prev.new, t.pk)

    def _delete(self, t: TableFold, ch: Change, old: dict[str, Any]) -> None:
        key = self._key(t, old, ch)
        prev = t.rows.get(key)
        if prev is None:
            t.rows[key] = RowEffect(DELETE, key, {}, dict(old), set(), ch.lsn, ch.lsn, 1)
        elif prev.op == INSERT:
            del t.rows[key]
            t.vanished += 1
        elif prev.op == UPDATE:
            prev.op, prev.new, prev.changed = DELETE, {}, set()
            prev.last_lsn, prev.events = ch.lsn, prev.events + 1
        else:
            raise ReplayError("delete of a deleted row", table=t.relation, key=key, lsn=ch.lsn)


def fold(changes: Iterable[Change], pk_for: Callable[[Change], list[str]] | None = None
         ) -> dict[str, TableFold]:
    """Fold changes (in commit order) into net effects per relation."""
    f = Folder(pk_for)
    for ch in changes:
        f.add(ch)
    return f.tables
