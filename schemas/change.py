"""Change events: one captured row change and the transaction that commits it.

A change keeps wal2json's JSON (format-version 2) exactly as received in ``raw``; the images are
parsed from it on demand with numbers as ``int``/``Decimal``, never ``float``. Other values are
PostgreSQL's text form (DateStyle=ISO, TimeZone=UTC), except bytea: wal2json sends its hex digits
without the ``\\x`` prefix. With numeric-data-types-as-string (wal2json 2.6+) numbers arrive as
text, NaN and ±Infinity included; without it (older logs) NaN and ±Infinity arrive as null.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

import msgspec

from pgcarry.schemas.lsn import Lsn

INSERT, UPDATE, DELETE, TRUNCATE = "I", "U", "D", "T"
NUMBERS_AS_TEXT = "numeric-data-types-as-string"  # the wal2json option (2.6+) a manifest may hold
ACTION_NAMES = {INSERT: "insert", UPDATE: "update", DELETE: "delete", TRUNCATE: "truncate"}


_decode = msgspec.json.Decoder(float_hook=Decimal).decode


def loads(text: str | bytes) -> Any:
    """Parse wal2json output losslessly: integers stay int (any size), other numbers become
    Decimal from their exact text."""
    return _decode(text)


_INTEGER_TYPES = frozenset(("smallint", "integer", "bigint", "oid"))
_DECIMAL_TYPES = ("numeric", "real", "double precision")


def number(value: Any, typ: str) -> Any:
    """A value of a number column as int or Decimal, also from wal2json's text form (option
    numeric-data-types-as-string, which alone carries NaN and ±Infinity: Decimal('NaN'), ...)."""
    if not isinstance(value, str):
        return value
    if typ in _INTEGER_TYPES:
        return int(value)
    return Decimal(value) if typ.startswith(_DECIMAL_TYPES) else value


def _image(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {c["name"]: number(c.get("value"), c.get("type", "")) for c in items or ()}


@dataclass(eq=True)
class Change:
    """One INSERT/UPDATE/DELETE/TRUNCATE of one relation, in its transaction's order."""

    seq: int
    lsn: Lsn
    action: str
    schema: str
    table: str
    raw: str

    @cached_property
    def _doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = loads(self.raw)
        return doc

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def new(self) -> dict[str, Any]:
        """The new image (INSERT/UPDATE): only the columns wal2json sent (unchanged TOAST is absent)."""
        return _image(self._doc.get("columns"))

    @property
    def old(self) -> dict[str, Any]:
        """The old image (UPDATE/DELETE): every column under REPLICA IDENTITY FULL, else the key."""
        return _image(self._doc.get("identity"))

    @property
    def types(self) -> dict[str, str]:
        cols = list(self._doc.get("columns") or ()) + list(self._doc.get("identity") or ())
        return {c["name"]: c["type"] for c in cols if "type" in c}

    @property
    def pk(self) -> list[str]:
        return [c["name"] for c in self._doc.get("pk") or ()]


@dataclass
class Transaction:
    """A committed source transaction. ``changes`` may be a lazy iterator for large transactions."""

    xid: int
    commit_lsn: Lsn  # end of the commit record: what the slot is confirmed to
    commit_time: str | None
    n_changes: int
    changes: Iterator[Change] | list[Change] = field(default_factory=list)
