"""Server errors while streaming: which ones a reconnect cures (a restart, a network cut, memory
pressure) and which repeat at the same LSN forever (a change whose JSON exceeds wal2json's 1 GB
output buffer, options wal2json rejects), so capture must stop and say so."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

_LSN = re.compile(r"associated LSN ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")
_TOO_LARGE = ("Cannot enlarge string buffer", "invalid memory alloc request size")
_WAL2JSON = 'output plugin "wal2json"'

# the record's first block names the relation (pg_walinspect, PostgreSQL 15+, when installed)
_RELATION = """
SELECT n.nspname, c.relname
FROM pg_get_wal_record_info(%s::pg_lsn) w
CROSS JOIN LATERAL regexp_match(w.block_ref, 'rel (\\d+)/(\\d+)/(\\d+)') m
JOIN pg_class c ON c.oid = pg_filenode_relation(
    CASE WHEN m[1]::oid = (SELECT dattablespace FROM pg_database WHERE datname = current_database())
         THEN 0 ELSE m[1]::oid END, m[3]::oid)
JOIN pg_namespace n ON n.oid = c.relnamespace
"""


@dataclass
class Failure:
    kind: str  # too-large | plugin
    message: str
    lsn: str | None


def classify(primary: str, detail: str | None, context: str | None) -> Failure | None:
    """A decoding failure that no retry can cure, from the server error's fields; None for the
    rest (they are retried)."""
    if _WAL2JSON not in (context or ""):
        return None
    m = _LSN.search(context or "")
    lsn = m.group(1) if m else None
    text = f"{primary} {detail or ''}"
    if any(t in text for t in _TOO_LARGE):
        return Failure("too-large", f"{primary}: {detail}" if detail else primary, lsn)
    if "startup callback" in (context or ""):
        return Failure("plugin", primary, lsn)
    return None


def relation_at(dsn: str, lsn: str) -> str | None:
    """The relation of the WAL record at `lsn`, when pg_walinspect is installed on the source."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(_RELATION, (lsn,)).fetchone()
    except psycopg.Error:
        return None
    return f"{row[0]}.{row[1]}" if row else None
