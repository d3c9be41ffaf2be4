"""Connections to the target (the database replayed into, verified or unmasked), every one with
the deterministic session settings of schemas/session.py. They are SET after connecting rather
than passed as startup options, which connection poolers may refuse.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgcarry.schemas.session import SETTINGS


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection:
    """psycopg.connect(dsn, **kwargs) with the settings applied for the whole session (a
    rollback of the caller's transaction keeps them)."""
    conn = psycopg.connect(dsn, **kwargs)
    autocommit = conn.autocommit
    conn.autocommit = True
    conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, false)").format(sql.Literal(k), sql.Literal(v))
        for k, v in SETTINGS.items())))
    conn.autocommit = autocommit
    return conn
