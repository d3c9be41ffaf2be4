"""The test copy: pg_dump with the slot's exported snapshot -> pg_restore into the target, then
the masking rules on the target. Passwords reach pg_dump/pg_restore through the environment.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcarry import progress as prog
from pgcarry.errors import PgcarryError
from pgcarry.pgtools import pg_tool
from pgcarry.schemas.config import MaskRule
from pgcarry.schemas.dsn import redact, safe_dsn


def libpq_env(dsn: str) -> tuple[str, dict[str, str]]:
    """A DSN without its password, and an environment that carries the password instead."""
    params = conninfo_to_dict(dsn)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**params), env


def run_tool(name: str, args: list[str], dsn: str) -> None:
    """Run a PostgreSQL program against `dsn`; a failure becomes one clear error without secrets."""
    clean, env = libpq_env(dsn)
    proc = subprocess.run(
        [pg_tool(name), *args, "-d", clean], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = redact(proc.stderr.strip()).splitlines()[-3:]
        raise PgcarryError(
            f"{name} failed (exit {proc.returncode}) on {safe_dsn(dsn)}: " + " | ".join(tail)
        )


def dump(source_dsn: str, snapshot: str | None, schemas: Iterable[str], out_dir: Path, jobs: int) -> None:
    args = ["-Fd", "-j", str(jobs), "-f", str(out_dir), "--no-owner", "--no-privileges"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    for s in sorted(set(schemas)):
        args += ["-n", s]
    run_tool("pg_dump", args, source_dsn)


def _existing_schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def restore(target_dsn: str, dump_dir: Path, jobs: int) -> None:
    """pg_restore the dump, skipping CREATE SCHEMA for schemas the target already has (public)."""
    listing = subprocess.run(
        [pg_tool("pg_restore"), "-l", str(dump_dir)], capture_output=True, text=True, check=True
    ).stdout
    existing = _existing_schemas(target_dsn)
    keep = [
        line for line in listing.splitlines()
        if not (" SCHEMA - " in line and line.split(" SCHEMA - ", 1)[1].split()[0] in existing)
    ]
    list_file = dump_dir.parent / "restore.list"
    list_file.write_text("\n".join(keep) + "\n")
    run_tool(
        "pg_restore",
        ["-j", str(jobs), "--no-owner", "--no-privileges", "--exit-on-error",
         "-L", str(list_file), str(dump_dir)],
        target_dsn,
    )


_SIZES = """
SELECT c.oid::bigint, pg_table_size(c.oid), pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s) AND c.relkind = 'r'
"""
_COPYING = """
SELECT relid::bigint, bytes_processed FROM pg_stat_progress_copy
WHERE datname = current_database() AND command = 'COPY TO'
"""
_DB_SIZE = "SELECT pg_database_size(current_database())"

Measure = Callable[[], int]


@contextmanager
def _polled(task: prog.Task, dsn: str, start: Callable[[psycopg.Connection], Measure]) -> Iterator[None]:
    """Run the block while `start(conn)`'s measure updates `task` (only when someone sees it;
    a source or target it cannot reach for this only goes without a figure)."""
    if not task.shown:
        yield
        return
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        measure = start(conn)
    except psycopg.Error:
        yield
        return
    try:
        with prog.watch(task, measure):
            yield
    finally:
        conn.close()


def _dumped(sizes: dict[int, int]) -> Callable[[psycopg.Connection], Measure]:
    """pg_dump's COPY TO per table as the source reports it, each up to the table's size; a
    table no longer copying counts whole."""
    def start(conn: psycopg.Connection) -> Measure:
        copying: dict[int, int] = {}
        finished: set[int] = set()

        def measure() -> int:
            now = {oid: n for oid, n in conn.execute(_COPYING).fetchall() if oid in sizes}
            finished.update(copying.keys() - now.keys())
            copying.clear()
            copying.update(now)
            return sum(sizes[o] for o in finished) + sum(min(n, sizes[o]) for o, n in now.items())
        return measure
    return start


def _restored(conn: psycopg.Connection) -> Measure:
    """The target database's growth since the restore began."""
    base = conn.execute(_DB_SIZE).fetchone()[0]  # type: ignore[index]
    return lambda: max(0, conn.execute(_DB_SIZE).fetchone()[0] - base)  # type: ignore[index]


def _sizes(dsn: str, schemas: list[str]) -> dict[int, tuple[int, int]]:
    """Per table: its size (heap + TOAST) and its total size (with indexes), from the source."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return {oid: (t, total) for oid, t, total in conn.execute(_SIZES, (schemas,)).fetchall()}


def copy(source_dsn: str, target_dsn: str, snapshot: str | None, schemas: Iterable[str], jobs: int,
         progress: prog.Progress = prog.NULL) -> None:
    """Dump the captured schemas as of `snapshot` and restore them into the (empty) target. The
    amounts shown are estimates: the dump against the tables' sizes on the source, the restore
    (the target's growth) against their sizes with indexes."""
    names = sorted(set(schemas))
    with tempfile.TemporaryDirectory(prefix="pgcarry-dump-") as tmp:
        os.chmod(tmp, 0o700)
        out = Path(tmp) / "dump"
        with progress.task("copy: dump", unit=prog.BYTES) as task:
            sizes = _sizes(source_dsn, names) if task.shown else {}
            task.update(0, sum(t for t, _ in sizes.values()))
            with _polled(task, source_dsn, _dumped({o: t for o, (t, _) in sizes.items()})):
                dump(source_dsn, snapshot, names, out, jobs)
        total = sum(n for _, n in sizes.values())
        with progress.task("copy: restore", total=total, unit=prog.BYTES) as task, \
                _polled(task, target_dsn, _restored):
            restore(target_dsn, out, jobs)


def _split(relation: str) -> tuple[str, str]:
    schema, _, table = relation.rpartition(".")
    return (schema or "public"), table


def mask(target_dsn: str, rules: list[MaskRule]) -> dict[str, list[str]]:
    """Apply the masking rules to the copy; return the masked columns by "schema.table"."""
    masked: dict[str, list[str]] = {}
    with psycopg.connect(target_dsn) as conn:
        for rule in rules:
            schema, table = _split(rule.table)
            col = sql.Identifier(rule.column)
            if rule.regex is not None:
                expr = sql.SQL("regexp_replace({}, %s, %s)").format(col)
                params: tuple[str, ...] = (rule.regex, rule.replace or "")
            else:
                expr, params = sql.SQL("%s"), (rule.value or "",)
            stmt = sql.SQL("UPDATE {}.{} SET {} = {} WHERE {} IS NOT NULL").format(
                sql.Identifier(schema), sql.Identifier(table), col, expr, col
            )
            try:
                conn.execute(stmt, params)
            except psycopg.Error as e:
                raise PgcarryError(
                    f"masking {rule.table}.{rule.column} failed: {e.diag.message_primary or e}",
                    hint="check the [[mask]] rule's table, column and pattern",
                ) from None
            masked.setdefault(f"{schema}.{table}", []).append(rule.column)
    return masked
