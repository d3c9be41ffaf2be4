"""The read-only fence: `default_transaction_read_only = on` for every login role in the production
database (previous per-role settings remembered), other sessions terminated; unfence restores.
pgcarry's own sessions pass `-c default_transaction_read_only=off` (client options win).
"""

from __future__ import annotations

import subprocess
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.errors import PgcarryError
from pgcarry.schemas.dsn import redact, with_options

SETTING = "default_transaction_read_only"


def writable(dsn: str) -> str:
    """The DSN for pgcarry's own sessions: writable even while the fence holds."""
    from psycopg.conninfo import conninfo_to_dict

    opts = conninfo_to_dict(dsn).get("options") or ""
    return with_options(dsn, options=f"{opts} -c {SETTING}=off".strip())


def _previous(conn: psycopg.Connection, role: str) -> str | None:
    row = conn.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE r.rolname = %s AND d.datname = current_database()", (role,)).fetchone()
    for item in (row[0] if row and row[0] else []):
        name, _, value = item.partition("=")
        if name == SETTING:
            return value
    return None


def remember(dsn: str) -> dict[str, Any]:
    """The login roles and their current per-database setting (saved before the fence)."""
    with psycopg.connect(writable(dsn), autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolcanlogin ORDER BY rolname")]
        return {"mode": "read-only", "database": db, "previous": {r: _previous(conn, r) for r in roles}}


def apply(dsn: str, saved: dict[str, Any]) -> int:
    """Fence writes for every remembered role; terminate the database's other sessions."""
    with psycopg.connect(writable(dsn), autocommit=True) as conn:
        for r in saved["previous"]:
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = on").format(
                sql.Identifier(r), sql.Identifier(saved["database"]), sql.Identifier(SETTING)))
        return int(conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'").fetchone()[0])  # type: ignore[index]


def run_cmd(cmd: str, what: str) -> None:
    """Run the user's --fence-cmd/--unfence-cmd through the shell; a failure stops the cutover."""
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True)  # noqa: S602 - user's own
    if proc.returncode != 0:
        tail = redact(proc.stderr.strip()).splitlines()[-3:]
        raise PgcarryError(f"{what} command failed (exit {proc.returncode}): " + " | ".join(tail))


def unfence(dsn: str, saved: dict[str, Any]) -> None:
    """Restore each role's previous setting in the database (or reset it), or run --unfence-cmd."""
    if saved.get("mode") == "cmd" and saved.get("unfence_cmd"):
        run_cmd(saved["unfence_cmd"], "unfence")
    if saved.get("mode") != "read-only":
        return
    with psycopg.connect(writable(dsn), autocommit=True) as conn:
        db = sql.Identifier(saved["database"])
        existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles")}
        for role, value in saved["previous"].items():
            if role not in existing:
                continue
            if value is None:
                conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET {}").format(
                    sql.Identifier(role), db, sql.Identifier(SETTING)))
            else:
                conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(role), db, sql.Identifier(SETTING), sql.Literal(value)))
