"""Write a commented pgcarry.toml from the source catalog: what would be captured, what cannot be
captured safely and why, and suggested `delta` columns and masking rules (commented out; a key,
unique or referenced column gets a salted kind that keeps its values distinct)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import psycopg

from pgcarry.capture import mask_plan
from pgcarry.capture.catalog import Relation, relations
from pgcarry.schemas import patterns
from pgcarry.schemas.config import DEFAULT_LOG_PATH, DEFAULT_SLOT
from pgcarry.schemas.dsn import safe_dsn

_DELTA_NAME = re.compile(r"stock|quantity|count|balance", re.IGNORECASE)
_INT_TYPES = ("smallint", "integer", "bigint", "numeric")
_PII_NAME = re.compile(r"mail|phone|mobile|card|holder|(^|_)name($|_)|firstname|lastname|fullname|"
                       r"address|birth|ssn|iban", re.IGNORECASE)
_TEXT = ("text", "character", "citext")
_DATES = ("date", "timestamp")


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a TOML basic string


def delta_candidates(rel: Relation) -> list[str]:
    return [
        c.name for c in rel.info.columns
        if _DELTA_NAME.search(c.name) and c.type.startswith(_INT_TYPES) and c.name not in rel.info.primary_key
    ]


def _rule(col: str, typ: str, nullable: bool, key: bool) -> list[str] | None:
    """The suggested options of a PII-looking column (None: nothing simple fits its type)."""
    width = re.search(r"^character(?: varying)?\((\d+)\)", typ)
    n = int(width.group(1)) if width else None
    note = "  # unique: a salted digest keeps the values distinct" if key else ""
    if typ == "uuid":
        return [f'kind = "hash"{note}']
    if typ.startswith(_TEXT):
        if "mail" in col.lower() and (n is None or n >= 30):
            return [f'kind = "email"{note}']
        if key or "mail" in col.lower():
            return None if n is not None and n < 16 else [f'kind = "hash"{note}'] + (
                [f"length = {n}"] if n is not None and n < 32 else [])
        if re.search("phone|mobile", col, re.IGNORECASE):
            return ['regex = "[0-9]"', 'replace = "0"', 'flags = "g"  # keeps the shape: 000-0000-0000']
        return ['value = "MASKED"']
    if typ.startswith(_DATES) and not key:
        return ['kind = "null"'] if nullable else ['value = "1970-01-01"']
    return None


def _mask_suggestions(rels: list[Relation], keys: dict[str, set[str]]) -> list[str]:
    out = ["# Masking of the test copy (restored from production's values at cutover). The salted kinds",
           "# (hash, email, regex with unique = true) need a salt, the same at start and at cutover:",
           "#   export PGCARRY_MASK_SALT=\"$(openssl rand -hex 16)\"",
           "# [masking]", "# salt = \"${PGCARRY_MASK_SALT}\"", "# Candidates:"]
    follows = {(r.qualified, c): (fk.ref_table, p) for r in rels for fk in r.info.foreign_keys
               for c, p in zip(fk.columns, fk.ref_columns)}
    for r in rels:
        for c in r.info.columns:
            parent = follows.get((r.qualified, c.name))
            if parent and _PII_NAME.search(parent[1]):
                out.append(f"# ({r.qualified}.{c.name} references {'.'.join(parent)}: it takes its rule)")
            if parent or c.generated or not _PII_NAME.search(c.name):
                continue
            opts = _rule(c.name, c.type, not c.not_null, c.name in keys.get(r.qualified, set()))
            if opts:
                out += ["# [[mask]]", f"# table = {_q(r.qualified)}", f"# column = {_q(c.name)}",
                        *(f"# {o}" for o in opts), "#"]
            else:
                out.append(f"# ({r.qualified}.{c.name}, {c.type}: no simple rule fits, see README.md)")
    return out


def render(dsn: str, rels: list[Relation], keys: dict[str, set[str]] | None = None) -> str:
    """The commented config; `keys` names each relation's columns in a key, a unique index or a
    foreign key's referenced columns (they get salted kinds)."""
    keys = keys or {}
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
    out += _mask_suggestions(ok, keys)
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
        rels = relations(conn)
        return render(dsn, rels, mask_plan.key_columns(conn, rels))
