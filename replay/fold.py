"""Fold a relation's captured events into one net effect per row (the `net` replay mode's core).

Pure logic, no database: insert+updates become one insert of the final image, insert+delete
vanishes, updates become one update of the columns production changed, a key change becomes a
delete of the old key plus an insert of the new one. A TRUNCATE discards what came before it.
A relation without a key folds as a multiset: an update or delete takes one row inserted in the
window that equals its old image, and is kept (a KeylessOp, in commit order) when none does.
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


@dataclass(slots=True)
class KeylessOp:
    """An UPDATE or DELETE of a relation without a key that no row inserted in the window
    matched: replay changes one target row equal to `old` (an UPDATE into `new`, the full image)."""

    op: str  # UPDATE | DELETE
    lsn: int
    old: dict[str, Any]
    new: dict[str, Any]


def image_sig(image: dict[str, Any]) -> tuple[tuple[str, str | None], ...]:
    """An image as a hashable value, the same whether its numbers came as Decimal or as text."""
    return tuple(sorted((k, None if v is None else str(v)) for k, v in image.items()))


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
    keyed: bool | None = None  # None until a change told: the relation has a key
    # a relation without a key: its inserts' final images (None: deleted again), the updates and
    # deletes no insert matched, and the updates that changed nothing
    plain: list[dict[str, Any] | None] = field(default_factory=list)
    ops: list[KeylessOp] = field(default_factory=list)
    noop: int = 0
    _decimal_key: list[bool] | None = None
    _index: dict[tuple[Any, ...], list[int]] | None = None  # image_sig -> positions in plain

    def key(self, parts: tuple[Any, ...]) -> Key:
        """`parts` as a key: numeric/float parts compare as numbers (1.5 and 1.50 are one key)
        whether they arrive as Decimal (Change) or as their text (replay's reader), NaN too."""
        flags = self._decimal_key
        if flags is None or len(flags) != len(self.pk):
            flags = self._decimal_key = [
                (self.columns.get(c) or "").startswith(_DECIMAL_TYPES) for c in self.pk]
        if not any(flags):
            return parts
        return tuple(_number_key(v) if f else v for v, f in zip(parts, flags))

    def tally(self) -> Counter[str]:
        """Net row operations by op (INSERT/UPDATE/DELETE), and "noop": updates that change
        nothing (a column changed and changed back)."""
        if not self.pk:
            ops = Counter(o.op for o in self.ops)
            return Counter({INSERT: len(self.inserts()), UPDATE: ops[UPDATE], DELETE: ops[DELETE],
                            "noop": self.noop})
        out: Counter[str] = Counter(r.op if r.op != UPDATE or r.changed else "noop"
                                    for r in self.rows.values())
        return out

    def inserts(self) -> list[dict[str, Any]]:
        """A keyless relation's rows inserted in the window, as they are at its end."""
        return [i for i in self.plain if i is not None]

    def put(self, image: dict[str, Any], at: int | None = None) -> None:
        """A keyless row into `plain` (appended, or replacing the one at `at`)."""
        if at is None:
            at = len(self.plain)
            self.plain.append(image)
        else:
            self.plain[at] = image
        if self._index is not None:
            self._index.setdefault(image_sig(image), []).append(at)

    def take(self, old: dict[str, Any]) -> int | None:
        """The position of a row inserted in the window that equals `old`, no longer indexed."""
        if self._index is None:  # built at the first update or delete: inserts stay appends
            self._index = {}
            for at, image in enumerate(self.plain):
                if image is not None:
                    self._index.setdefault(image_sig(image), []).append(at)
        spots = self._index.get(image_sig(old))
        return spots.pop() if spots else None

    def count(self, op: str) -> int:
        return self.tally()[op]

    @property
    def noop_updates(self) -> int:
        return self.tally()["noop"]


def _number_key(v: Any) -> Any:
    """A numeric/float key part that compares as PostgreSQL does: 1.5 == 1.50, and NaN equal to
    NaN (a Decimal NaN equals nothing, so non-finite parts stay their text)."""
    if isinstance(v, str):
        v = Decimal(v)
    return v if not isinstance(v, Decimal) or v.is_finite() else str(v)


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
            key = list(self.keys.get(relation, []))
            t = self.tables[relation] = TableFold(relation, key, keyed=True if key else None)
        if t.keyed is None and action != TRUNCATE:
            t.pk = pk()
            t.keyed = bool(t.pk)
        t.captured[action] += 1
        return t

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
        t.ops.clear()
        t._index = None
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
            t.put(image)
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
        if any(c not in old for c in new):
            t.partial_old = True
        if not t.pk:
            self._keyless_update(t, lsn, old, {**old, **new})  # unchanged TOAST: from old
            return
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

    @staticmethod
    def _keyless_update(t: TableFold, lsn: int, old: dict[str, Any], full: dict[str, Any]) -> None:
        if full == old:
            t.noop += 1
            return
        at = t.take(old)
        if at is None:
            t.ops.append(KeylessOp(UPDATE, lsn, old, full))
        else:
            t.put(full, at)

    def delete(self, t: TableFold, lsn: int, old: dict[str, Any]) -> None:
        if not t.pk:
            at = t.take(old)
            if at is None:
                t.ops.append(KeylessOp(DELETE, lsn, old, {}))
            else:
                t.plain[at] = None
                t.vanished += 1
            return
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
