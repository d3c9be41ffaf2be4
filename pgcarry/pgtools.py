"""Where the PostgreSQL client and server programs are (pg_dump, pg_restore, initdb, ...).

``PGCARRY_PG_BIN`` wins; then Debian's newest ``/usr/lib/postgresql/N/bin``; then PATH.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pgcarry.errors import PgcarryError


def pg_bindir() -> Path | None:
    env = os.environ.get("PGCARRY_PG_BIN")
    if env:
        return Path(env)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def pg_tool(name: str) -> str:
    """The full path of a PostgreSQL program, or a PgcarryError that says how to install it."""
    bindir = pg_bindir()
    if bindir and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if found:
        return found
    raise PgcarryError(
        f"{name} not found",
        hint="install the PostgreSQL programs (Debian: apt-get install postgresql-15) "
        "or set PGCARRY_PG_BIN",
    )
