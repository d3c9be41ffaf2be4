"""Lsn: a PostgreSQL WAL position as a frozen, ordered value type.

Its text form is PostgreSQL's own ``X/X``; ``key()`` is a fixed-width form whose string order is the
LSN order, for log keys and file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_MAX = (1 << 64) - 1


@dataclass(frozen=True, order=True, slots=True)
class Lsn:
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= _MAX:
            raise ValueError(f"LSN out of range: {self.value}")

    @classmethod
    def parse(cls, text: str) -> Lsn:
        m = _LSN_RE.match(text.strip())
        if not m:
            raise ValueError(f"not an LSN (expected X/X hexadecimal): {text!r}")
        return cls((int(m.group(1), 16) << 32) | int(m.group(2), 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def key(self) -> str:
        """Fixed-width text form: sorting these strings sorts the LSNs."""
        return f"{self.value >> 32:08X}/{self.value & 0xFFFFFFFF:08X}"

    def __sub__(self, other: Lsn) -> int:
        """Bytes of WAL between two positions (PostgreSQL's pg_wal_lsn_diff)."""
        return self.value - other.value

    def __add__(self, nbytes: int) -> Lsn:
        return Lsn(self.value + nbytes)


ZERO = Lsn(0)
