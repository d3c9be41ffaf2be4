"""Synthetic wal2json (format-version 2) changes for the replay unit and property tests.

``Wal`` hands out increasing LSNs and builds Change objects the way capture stores them; the types
default to what wal2json reports for the small schemas the tests use.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pgcarry.schemas.change import Change, Transaction
from pgcarry.schemas.lsn import Lsn


def _col(name: str, value: Any, types: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "type": types.get(name, "text"), "value": value}


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return float(o) if o != o.to_integral_value() else int(o)
    raise TypeError(type(o).__name__)


class Wal:
    def __init__(self, types: dict[str, dict[str, str]] | None = None, pk: dict[str, list[str]] | None = None):
        self.types = types or {}
        self.pks = pk or {}
        self.lsn = 0x1000000
        self.seq = 0
        self.xid = 700

    def _change(self, action: str, rel: str, new: dict | None, old: dict | None) -> Change:
        schema, table = rel.split(".")
        types = self.types.get(rel, {})
        doc: dict[str, Any] = {"action": action, "xid": self.xid, "lsn": str(Lsn(self.lsn)),
                               "schema": schema, "table": table}
        if new is not None:
            doc["columns"] = [_col(k, v, types) for k, v in new.items()]
        if old is not None:
            doc["identity"] = [_col(k, v, types) for k, v in old.items()]
        if action != "T":
            doc["pk"] = [{"name": c, "type": types.get(c, "integer")} for c in self.pks.get(rel, ["id"])]
        self.lsn += 0x100
        self.seq += 1
        raw = json.dumps(doc, default=_default)
        return Change(self.seq, Lsn(self.lsn), action, schema, table, raw)

    def ins(self, rel: str, **new: Any) -> Change:
        return self._change("I", rel, new, None)

    def upd(self, rel: str, old: dict, new: dict) -> Change:
        return self._change("U", rel, new, old)

    def dele(self, rel: str, **old: Any) -> Change:
        return self._change("D", rel, None, old)

    def trunc(self, rel: str) -> Change:
        return self._change("T", rel, None, None)

    def txn(self, *changes: Change) -> Transaction:
        self.xid += 1
        self.lsn += 0x100
        return Transaction(self.xid, Lsn(self.lsn), "2026-01-01 00:00:00+00", len(changes), list(changes))


def write_log(path, txns: list[Transaction]):
    """A real SQLite change log holding `txns` (as the capture daemon would write them)."""
    from pgcarry.changelog.sqlite import SQLiteLog

    log = SQLiteLog(path, create=True)
    for t in txns:
        log.begin(t.xid, t.commit_lsn)
        for ch in t.changes:
            log.append(ch)
        log.commit(t.commit_time)
    log.sync()
    return log
