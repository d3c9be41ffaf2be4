"""Fold a relation's captured events into one net effect per row (the `net` replay mode's core).

Pure logic, no database: insert+updates become one insert of the final image, insert+delete
vanishes, updates become one update of the columns production changed, a key change becomes a
delete of the old key plus an insert of the new one. A TRUNCATE discards what came before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pgcarry.errors import ReplayError
from pgcarry.schemas.change import DELETE, INSERT, TRUNCATE, UPDATE, Change
from pgcarry.schemas.lsn import Lsn

Key = tuple[Any, ...]


@dataclass(slots=True)
class RowEffect:
    """The net effect of a row's events: what replay does to the target row with this key."""

    op: str  # INSERT | UPDATE | DELETE
    key: Key
    new: dict[str, Any] = field(default_factory=dict)  # final image: columns production sent
    base: dict[str, Any] = field(default_factory=dict)  # production's image before the first event
    changed: set[str] = field(default_factory=set)  # UPDATE only: columns whose net value differs
    first_lsn: int = 0  # LSN values of the first and the last event
    last_lsn: int = 0
    events: int = 0

    def final_image(self) -> dict[str, Any]:
        """Production's final row as far as known: the base image overlaid with the new image."""
        return {**self.base, **self.new}


_DECIMAL_TYPES = ("numeric", "decimal", "real", "double precision", "float")


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
    plain: list[dict[str, Any]] = field(default_factory=list)  # keyless relation: its inserts
    _decimal_key: list[bool] | None = None

    def key(self, parts: tuple[Any, ...]) -> Key:
        """`parts` as a key: numeric/float parts compare as numbers (1.5 and 1.50 are one key)
        whether they arrive as Decimal (Change) or as their text (replay's reader)."""
        flags = self._decimal_key
        if flags is None or len(flags) != len(self.pk):
            flags = self._decimal_key = [
                (self.columns.get(c) or "").startswith(_DECIMAL_TYPES) for c in self.pk]
        if not any(flags):
            return parts
        return tuple(Decimal(v) if f and isinstance(v, str) else v for v, f in zip(parts, flags))

    def tally(self) -> Counter[str]:
        """Net row operations by op (INSERT/UPDATE/DELETE), and "noop": updates that change
        nothing (a column changed and changed back)."""
        out: Counter[str] = Counter(r.op if r.op != UPDATE or r.changed else "noop"
                                    for r in self.rows.values())
        return out

    def count(self, op: str) -> int:
        return self.tally()[op]

    @property
    def noop_updates(self) -> int:
        return self.tally()["noop"]


def _changed(base: dict[str, Any], new: dict[str, Any], pk: list[str]) -> set[str]:
    """Columns whose new value differs from base; a column absent from base counts as changed."""
    return {c for c, v in new.items() if c not in pk and (c not in base or base[c] != v)}


class Folder:
    """Feed changes in commit order with ``add`` (or, already decoded, with ``table`` and
    ``insert``/``update``/``delete``/``truncate``); read ``tables`` at the end. `keys` names the
    key of relations whose changes carry none (REPLICA IDENTITY USING INDEX: wal2json's pk is
    empty, the identity index's columns identify the row)."""

    def __init__(self, pk_for: Callable[[Change], list[str]] | None = None,
                 keys: dict[str, list[str]] | None = None) -> None:
        self.tables: dict[str, TableFold] = {}
        self._pk_for = pk_for or (lambda ch: ch.pk)
        self.keys = keys or {}

    def table(self, relation: str, action: str, lsn: int, pk: Callable[[], list[str]]) -> TableFold:
        """The fold of `relation`; `pk` is asked only while the relation's key is unknown."""
        t = self.tables.get(relation)
        if t is None:
            t = self.tables[relation] = TableFold(relation, list(self.keys.get(relation, [])))
        if not t.pk and action != TRUNCATE and not t.plain:
            t.pk = pk()
            if not t.pk and not self.keyless:
                raise ReplayError(
                    "captured relation has no primary key", table=relation, lsn=Lsn(lsn),
                    hint="add a primary key, or set `ignore = true` for the table in [replay.tables]",
                )
        t.captured[action] += 1
        return t

    keyless = False  # the fast reader keeps keyless relations' inserts in TableFold.plain

    def add(self, ch: Change) -> None:
        t = self.table(ch.relation, ch.action, ch.lsn.value, lambda: self._pk_for(ch))
        if ch.action == TRUNCATE:
            self.truncate(t, ch.lsn.value)
            return
        for name, typ in ch.types.items():
            t.columns.setdefault(name, typ)
        if ch.action == INSERT:
            self.insert(t, ch.lsn.value, ch.new)
        elif ch.action == UPDATE:
            self.update(t, ch.lsn.value, ch.old, ch.new)
        elif ch.action == DELETE:
            self.delete(t, ch.lsn.value, ch.old)
        else:
            raise ReplayError(f"unknown action {ch.action!r}", table=ch.relation, lsn=ch.lsn)

    @staticmethod
    def truncate(t: TableFold, lsn: int) -> None:
        t.rows.clear()
        t.plain.clear()
        t.truncated_at = Lsn(lsn)

    @staticmethod
    def _key(t: TableFold, image: dict[str, Any], lsn: int) -> Key:
        try:
            return t.key(tuple([image[c] for c in t.pk]))
        except KeyError as e:
            raise ReplayError(
                f"change lacks primary-key column {e.args[0]}", table=t.relation, lsn=Lsn(lsn)
            ) from None

    def insert(self, t: TableFold, lsn: int, image: dict[str, Any]) -> None:
        if not t.pk:
            t.plain.append(image)
            return
        key = self._key(t, image, lsn)
        prev = t.rows.get(key)
        if prev is None:
            t.rows[key] = RowEffect(INSERT, key, image, {}, set(), lsn, lsn, 1)
        elif prev.op == DELETE:  # deleted and inserted again: an update of the T0 row
            prev.op, prev.new = UPDATE, dict(image)
            prev.changed = _changed(prev.base, prev.new, t.pk)
            prev.last_lsn, prev.events = lsn, prev.events + 1
        else:
            raise ReplayError("insert of a key that already exists in the stream",
                              table=t.relation, key=key, lsn=Lsn(lsn))

    def update(self, t: TableFold, lsn: int, old: dict[str, Any], new: dict[str, Any]) -> None:
        if not t.pk:
            raise ReplayError("update of a relation without a primary key", table=t.relation,
                              lsn=Lsn(lsn))
        if any(c not in old for c in new):
            t.partial_old = True
        old_key = self._key(t, old, lsn) if old else self._key(t, new, lsn)
        new_key = t.key(tuple([new.get(c, k) for c, k in zip(t.pk, old_key)]))
        if new_key != old_key:  # a primary-key change: delete the old key, insert the new one
            prev = t.rows.get(old_key)
            image = {**(prev.final_image() if prev else old), **new}
            self.delete(t, lsn, old)
            self.insert(t, lsn, image)
            return
        prev = t.rows.get(old_key)
        if prev is None:
            t.rows[old_key] = RowEffect(UPDATE, old_key, {**old, **new}, old,
                                        _changed(old, new, t.pk), lsn, lsn, 1)
            return
        if prev.op == DELETE:
            raise ReplayError("update of a deleted row", table=t.relation, key=old_key, lsn=Lsn(lsn))
        prev.new.update(new)
        prev.last_lsn, prev.events = lsn, prev.events + 1
        if prev.op == UPDATE:
            prev.changed = _changed(prev.base, prev.new, t.pk)

    def delete(self, t: TableFold, lsn: int, old: dict[str, Any]) -> None:
        if not t.pk:
            raise ReplayError("delete from a relation without a primary key", table=t.relation,
                              lsn=Lsn(lsn))
        key = self._key(t, old, lsn)
        prev = t.rows.get(key)
        if prev is None:
            t.rows[key] = RowEffect(DELETE, key, {}, old, set(), lsn, lsn, 1)
        elif prev.op == INSERT:
            del t.rows[key]
            t.vanished += 1
        elif prev.op == UPDATE:
            prev.op, prev.new, prev.changed = DELETE, {}, set()
            prev.last_lsn, prev.events = lsn, prev.events + 1
        else:
            raise ReplayError("delete of a deleted row", table=t.relation, key=key, lsn=Lsn(lsn))


def fold(changes: Iterable[Change], pk_for: Callable[[Change], list[str]] | None = None
         ) -> dict[str, TableFold]:
    """Fold changes (in commit order) into net effects per relation."""
    f = Folder(pk_for)
    for ch in changes:
        f.add(ch)
    return f.tables
