"""Overwrite: replace the captured schemas in production with the test database's (schema and
data) in ONE transaction — drop their tables, then the test dump's SQL (`pg_restore --clean`) via
`psql -1`. Other schemas are left alone; a re-run after a crash simply redoes it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from pgcarry.capture.copy import dump, run_tool
from pgcarry.pgtools import pg_tool


def _drops(dsn: str, schemas: list[str]) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'f', 'v', 'm') "
            "AND NOT c.relispartition ORDER BY 1, 2", (schemas,)).fetchall()
        kinds = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
        out = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {};").format(sql.Identifier(s)) for s in schemas]
        out += [sql.SQL("DROP {} IF EXISTS {}.{} CASCADE;").format(
            sql.SQL(kinds[k]), sql.Identifier(s), sql.Identifier(t)) for s, t, k in rows]
        return "\n".join(q.as_string(conn) for q in out)


def _keep_access(dsn: str, schemas: list[str]) -> str:
    """Production's owners and grants on the captured relations, re-applied after the restore to
    each relation that still exists (the test dump carries neither)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), pg_get_userbyid(a.grantee), "
            "a.privilege_type, a.is_grantable FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN LATERAL aclexplode(c.relacl) a ON a.grantee <> 0 AND a.grantee <> c.relowner "
            "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')",
            (schemas,)).fetchall()
        out = []
        for s, t, owner, grantee, priv, grantable in rows:
            rel = sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(t))
            stmts = [sql.SQL("ALTER TABLE {} OWNER TO {}").format(rel, sql.Identifier(owner))]
            if grantee:
                stmts.append(sql.SQL("GRANT {} ON {} TO {}{}").format(
                    sql.SQL(priv), rel, sql.Identifier(grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else "")))
            for st in stmts:
                body = sql.SQL("BEGIN IF to_regclass({}) IS NOT NULL THEN EXECUTE {}; END IF; END").format(
                    sql.Literal(rel.as_string(conn)), sql.Literal(st.as_string(conn)))
                out.append(sql.SQL("DO {};").format(sql.Literal(body.as_string(conn))).as_string(conn))
        return "\n".join(dict.fromkeys(out))


def _script(dump_dir: Path, out: Path) -> None:
    """The dump as SQL with --clean, without CREATE/DROP/COMMENT of the schemas themselves."""
    listing = subprocess.run([pg_tool("pg_restore"), "-l", str(dump_dir)],
                             capture_output=True, text=True, check=True).stdout
    keep = [ln for ln in listing.splitlines() if " SCHEMA - " not in ln
            and " COMMENT - SCHEMA " not in ln]
    (dump_dir.parent / "overwrite.list").write_text("\n".join(keep) + "\n")
    subprocess.run([pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                    "-L", str(dump_dir.parent / "overwrite.list"), "-f", str(out), str(dump_dir)],
                   check=True, capture_output=True, text=True)


def overwrite(prod_dsn: str, test_dsn: str, schemas: list[str], jobs: int = 2) -> None:
    """Replace `schemas` in production with the test database's, atomically."""
    with tempfile.TemporaryDirectory(prefix="pgcarry-overwrite-") as tmp:
        os.chmod(tmp, 0o700)
        folder = Path(tmp)
        dump(test_dsn, None, schemas, folder / "dump", jobs)
        _script(folder / "dump", folder / "restore.sql")
        wrapper = folder / "overwrite.sql"
        wrapper.write_text(_drops(prod_dsn, schemas) + f"\n\\i {folder / 'restore.sql'}\n"
                           + _keep_access(prod_dsn, schemas) + "\n")
        run_tool("psql", ["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(wrapper)], prod_dsn)
