"""The test copy: pg_dump with the slot's exported snapshot -> pg_restore into the target in
sections: the schema (pre-data), the rows (data), the masking rules, then indexes, constraints and
triggers (post-data): a masked key and its references are rewritten before any constraint exists,
and no trigger fires. Passwords reach pg_dump/pg_restore through the environment.
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
from pgcarry.capture import mask as mask_mod
from pgcarry.errors import PgcarryError
from pgcarry.pgtools import pg_tool
from pgcarry.schemas.dsn import redact, safe_dsn
from pgcarry.schemas.manifest import TableInfo


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


def dump_pattern(name: str) -> str:
    """`name` as a pg_dump -n/-t pattern that matches exactly it: inside double quotes every
    character is literal (psql pattern rules), and a quote is written twice."""
    return '"' + name.replace('"', '""') + '"'


def dump(source_dsn: str, snapshot: str | None, schemas: Iterable[str], out_dir: Path, jobs: int) -> None:
    args = ["-Fd", "-j", str(jobs), "-f", str(out_dir), "--no-owner", "--no-privileges"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    for s in sorted(set(schemas)):
        args += ["-n", dump_pattern(s)]
    run_tool("pg_dump", args, source_dsn)


def _existing_schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def _schema_entry(line: str) -> str | None:
    """The schema a `pg_restore -l` line creates ("ID; OID OID SCHEMA - name owner"), else None.
    Names are listed unquoted and may hold spaces; the owner is the last word."""
    head, sep, rest = line.partition(" SCHEMA - ")
    if not sep or head.startswith(";"):
        return None
    return rest.rsplit(" ", 1)[0]


def restore(target_dsn: str, dump_dir: Path, jobs: int, between: Callable[[], None] | None = None
            ) -> None:
    """pg_restore the dump, skipping CREATE SCHEMA for schemas the target already has (public):
    pre-data, data, then `between()` (the masks), then post-data. Should the data or `between`
    fail, the restored tables are emptied again: no unmasked row stays behind."""
    listing = subprocess.run(
        [pg_tool("pg_restore"), "-l", str(dump_dir)], capture_output=True, text=True, check=True
    ).stdout
    existing = _existing_schemas(target_dsn)
    keep = [line for line in listing.splitlines() if _schema_entry(line) not in existing]
    list_file = dump_dir.parent / "restore.list"
    list_file.write_text("\n".join(keep) + "\n")

    def section(name: str) -> None:
        run_tool("pg_restore", ["-j", str(jobs), "--no-owner", "--no-privileges", "--exit-on-error",
                                f"--section={name}", "-L", str(list_file), str(dump_dir)], target_dsn)

    before = _tables(target_dsn)
    section("pre-data")
    try:
        section("data")
        if between is not None:
            between()
    except BaseException:
        if between is not None:
            _empty(target_dsn, _tables(target_dsn) - before)
        raise
    section("post-data")


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


def _tables(dsn: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {(r[0], r[1]) for r in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%'").fetchall()}


def _empty(dsn: str, tables: set[tuple[str, str]]) -> None:
    if tables:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(*t) for t in sorted(tables))))


def copy(source_dsn: str, target_dsn: str, snapshot: str | None, schemas: Iterable[str], jobs: int,
         between: Callable[[], None] | None = None, progress: prog.Progress = prog.NULL) -> None:
    """Dump the captured schemas as of `snapshot` and restore them into the (empty) target,
    running `between()` after the rows and before the indexes and constraints. The amounts shown
    are estimates: the dump against the tables' sizes on the source, the restore (the target's
    growth) against their sizes with indexes."""
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
            restore(target_dsn, out, jobs, between)


def mask(target_dsn: str, tables: list[TableInfo], salt: str | None) -> int:
    """Apply the masks the preflight recorded to the copy's rows, all in one transaction (a rule
    never half-applies), one UPDATE per table; return the number of masked columns."""
    n = 0
    with psycopg.connect(target_dsn) as conn:
        mask_mod.load_salt(conn, salt)
        for t in tables:
            if not t.masks:
                continue
            ident = sql.Identifier(t.schema_name, t.name)
            types = mask_mod.column_types(conn, ident)
            sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(
                sql.Identifier(m.column), mask_mod.expression(
                    mask_mod.MaskSpec.of(m.kind, m.options), sql.Identifier(m.column), types[m.column]))
                for m in t.masks)
            try:
                conn.execute(sql.SQL("UPDATE {} SET {}").format(ident, sets))
            except psycopg.Error as e:
                raise PgcarryError(
                    f"masking {t.qualified} failed: {e.diag.message_primary or e}",
                    hint="the copied rows were removed; check the [[mask]] rules of the table",
                ) from None
            n += len(t.masks)
    return n
