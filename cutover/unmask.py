"""PII guard in the cutover: before the overwrite, production's values of the masked tables are
kept in the `pgcarry_unmask` schema (replay/pii.py: the rows that existed at T0); after the
overwrite, before the replay, they are written back over the masked rows (keys through the
mask, so the replay finds production's keys); verify proves none remain.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from pgcarry.changelog.base import ChangeLog
from pgcarry.replay import pii, session
from pgcarry.schemas.config import Config
from pgcarry.schemas.manifest import Manifest

SCHEMA = pii.SCHEMA


def save(dsn: str, manifest: Manifest, cfg: Config, log: ChangeLog, into: str | None = None
         ) -> dict[str, int]:
    """Keep production's values of the masked tables in `into` (default: production itself), in
    one transaction of `into`; re-runnable. Rows kept per table."""
    with session.connect(dsn) as src, session.connect(into or dsn) as dst:
        return pii.keep(src, dst, pii.tables(manifest, cfg.replay), log)


def restore(dsn: str, manifest: Manifest, cfg: Config) -> dict[str, int]:
    """Write production's values back over the masked ones, in one transaction; rows per table."""
    with session.connect(dsn) as conn:
        return pii.restore(conn, pii.tables(manifest, cfg.replay), cfg.salt)


def discard(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
