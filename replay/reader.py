"""Mode `net`'s reader: every captured change decoded once, straight into the fold.

msgspec decodes wal2json's document into small typed structs. Numbers keep their exact text
(integers stay int), which is what the staging COPY hands to the target's input functions — no
Decimal, no float. The rules are fold.Folder's, shared with mode `txn` and verify; only a key's
first insert, by far the most common event, is folded inline here.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from pgcarry import progress as prog
from pgcarry.changelog.base import RawChange
from pgcarry.errors import ReplayError
from pgcarry.replay.fold import Folder, RowEffect, TableFold
from pgcarry.schemas.change import DELETE, INSERT, TRUNCATE, UPDATE
from pgcarry.schemas.lsn import Lsn


class _Value(msgspec.Struct, gc=False):
    name: str
    value: Any = None


class _Doc(msgspec.Struct, gc=False):
    columns: list[_Value] = []
    identity: list[_Value] = []


class _Typed(msgspec.Struct):
    name: str
    type: str = ""


class _Header(msgspec.Struct):
    """Read once per relation and whenever a column name is new: the key and the types."""

    columns: list[_Typed] = []
    identity: list[_Typed] = []
    pk: list[_Typed] = []


decode = msgspec.json.Decoder(_Doc, float_hook=str).decode  # what replay reads of each change
_header = msgspec.json.Decoder(_Header, float_hook=str).decode


def _decoded(decode: Callable[[str], Any], raw: str, rel: str, lsn: int) -> Any:
    try:
        return decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ReplayError(f"captured change cannot be decoded: {e}", table=rel, lsn=Lsn(lsn),
                          hint="nothing was applied; the log is damaged") from None


def _learn(t: TableFold, raw: str, lsn: int) -> None:
    """Record the wal2json type of every column of `raw` not seen before in its relation."""
    h = _decoded(_header, raw, t.relation, lsn)
    for c in h.columns + h.identity:
        t.columns.setdefault(c.name, c.type)


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic collector while millions of acyclic objects are built (the images and
    effects): its passes over them would double the fold's time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read(rows: Iterator[RawChange], stats: dict[str, Any], task: prog.Task,
         keys: dict[str, list[str]] | None = None) -> dict[str, TableFold]:
    """Fold `rows` (commit order) into net effects per relation (see fold.Folder, also for
    `keys`). Fills `stats`: first/last commit LSN, transactions, changes; `task` counts the
    changes read."""
    with no_gc():
        return _read(rows, stats, task, keys)


def _read(rows: Iterator[RawChange], stats: dict[str, Any], task: prog.Task,
          keys: dict[str, list[str]] | None) -> dict[str, TableFold]:
    folder = Folder(keys=keys)
    tables = folder.tables
    relations: dict[tuple[str, str], str] = {}
    n, commit, ntx, note = 0, -1, 0, prog.EVERY
    for commit_lsn, lsn, action, schema, table, raw in rows:
        n += 1
        if commit_lsn != commit:
            commit, ntx = commit_lsn, ntx + 1
            stats.setdefault("first", Lsn(commit_lsn))
        if n == note:
            task.update(n)
            note += prog.EVERY
        rel = relations.get((schema, table)) or relations.setdefault((schema, table), f"{schema}.{table}")
        if action == TRUNCATE:
            folder.truncate(folder.table(rel, action, lsn, list), lsn)
            continue
        d = _decoded(decode, raw, rel, lsn)
        t = tables.get(rel)
        if t is None or not t.pk:
            t = folder.table(rel, action, lsn,
                             lambda: [k.name for k in _decoded(_header, raw, rel, lsn).pk])
        else:
            t.captured[action] += 1
        new = {c.name: c.value for c in d.columns}
        old = {c.name: c.value for c in d.identity}
        seen = t.columns.keys()
        if not (seen >= new.keys() and seen >= old.keys()):
            _learn(t, raw, lsn)
        if action == INSERT:
            pk = t.pk
            key = t.key((new[pk[0]],)) if len(pk) == 1 and pk[0] in new else None
            if key is not None and key not in t.rows:
                t.rows[key] = RowEffect(INSERT, key, new, {}, set(), lsn, lsn, 1)
            else:
                folder.insert(t, lsn, new)
        elif action == UPDATE:
            folder.update(t, lsn, old, new)
        elif action == DELETE:
            folder.delete(t, lsn, old)
        else:
            raise ReplayError(f"unknown action {action!r}", table=rel, lsn=Lsn(lsn))
    if ntx:
        stats["last"], stats["transactions"] = Lsn(commit), ntx
    stats["changes"] = n
    return folder.tables
