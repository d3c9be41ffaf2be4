"""Write a commented pgcarry.toml from the source catalog: what would be captured, what cannot be
captured safely and why, and suggested `delta` and masking columns (commented out)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import psycopg

from pgcarry.capture.catalog import Relation, relations
from pgcarry.schemas import patterns
from pgcarry.schemas.config import DEFAULT_LOG_PATH, DEFAULT_SLOT
from pgcarry.schemas.dsn import safe_dsn

_DELTA_NAME = re.compile(r"stock|quantity|count|balance", re.IGNORECASE)
_INT_TYPES = ("smallint", "integer", "bigint", "numeric")
_PII_NAME = re.compile(r"email|phone|card|holder|ssn|address", re.IGNORECASE)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a TOML basic string


def delta_candidates(rel: Relation) -> list[str]:
    return [
        c.name for c in rel.info.columns
        if _DELTA_NAME.search(c.name) and c.type.startswith(_INT_TYPES) and c.name not in rel.info.primary_key
    ]


def render(dsn: str, rels: list[Relation]) -> str:
    ok = [r for r in rels if r.capturable]
    bad = [r for r in rels if not r.capturable]
    schemas = sorted({r.info.schema_name for r in rels}) or ["public"]
    out = [
        f"# pgcarry.toml -- written by `pgcarry init` from {safe_dsn(dsn)}",
        f"# on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Keys are documented in README.md.",
        "",
        "[source]",
        "# Passwords never go here: use PGPASSWORD, ~/.pgpass, or a reference like \"${PROD_DATABASE_URL}\".",
        f"dsn = {_q(safe_dsn(dsn))}",
        f"slot = {_q(DEFAULT_SLOT)}",
        "",
        "[capture]",
        f"tables = [{', '.join(_q(patterns.quote(s) + '.*') for s in schemas)}]",
        "exclude = []",
        f"# {len(ok)} tables would be captured:",
    ]
    for r in ok:
        pk = ", ".join(r.info.primary_key) or "-"
        note = "" if r.info.replica_identity == "full" else "  (start --set-replica-identity makes it FULL)"
        out.append(f"#   {r.qualified:40} key ({pk}), replica identity {r.info.replica_identity}{note}")
    if bad:
        out.append("# These tables cannot be captured safely: their UPDATEs and DELETEs would vanish.")
        out.append("# Fix each (ALTER TABLE ... REPLICA IDENTITY FULL, or add a primary key) or exclude it:")
        for r in bad:
            out.append(f"#   {r.qualified}: no primary key, REPLICA IDENTITY {r.info.replica_identity.upper()}")
        out.append(f"# exclude = [{', '.join(_q(patterns.exact(r.info.schema_name, r.info.name)) for r in bad)}]")
    out += [
        "# A table may opt out of REPLICA IDENTITY FULL (every column then counts as changed):",
        "# [capture.identity]",
        "# \"public.some_table\" = \"default\"",
        "",
        "[log]",
        "backend = \"sqlite\"",
        f"path = {_q(DEFAULT_LOG_PATH)}",
        "",
        "[copy]",
        "# to = \"host=localhost dbname=shop_test\"",
        "jobs = 2",
        "",
    ]
    pii = [(r, c.name) for r in ok for c in r.info.columns if _PII_NAME.search(c.name) and "char" in c.type + "text"]
    out.append("# Masking of the test copy (restored from production's values at cutover). Candidates:")
    for r, col in pii:
        out += ["# [[mask]]", f"# table = {_q(r.qualified)}", f"# column = {_q(col)}", "# value = \"MASKED\"", "#"]
    out += ["", "[replay]", "mode = \"net\"", "# Suggested delta columns (counters: target += production's change):"]
    for r in ok:
        cols = delta_candidates(r)
        if cols:
            out.append(f"# [replay.tables.{_q(r.qualified)}.columns]")
            out += [f"# {_q(c)} = \"delta\"" for c in cols]
    out += [
        "",
        "# [[verify.assert]]",
        "# name = \"stock never negative\"",
        "# sql = \"SELECT NOT EXISTS (SELECT 1 FROM public.products WHERE stock_quantity < 0)\"",
        "",
    ]
    return "\n".join(out)


def generate(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return render(dsn, relations(conn))
