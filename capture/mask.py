"""Mask expressions: the one place that turns a [[mask]] rule into SQL over a column expression.

The salt reaches the server only as COPY data into a temporary table of the session (a bind
parameter would be written to the server log with log_statement = 'all', as SQL text would be),
and every expression reads it from there. Rule constants (regex, replace, prefix, domain, value)
are config text, quoted by psycopg as literals because one expression is composed into many
statements. Deterministic: equal inputs give equal outputs, in every table and every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.errors import PreflightError
from pgcarry.schemas.config import MASK_OPTIONS

SALT_TABLE = sql.Identifier("pg_temp", "pgcarry_mask_salt")
SALT = sql.SQL("(SELECT salt FROM {})").format(SALT_TABLE)
UUID_HEX = 32
SALT_PROBE = b"pgcarry salt check"


@dataclass(frozen=True)
class ColumnType:
    """What a mask needs to know of a column's type (a domain is read through its base type)."""

    name: str  # format_type(), e.g. "character varying(40)"
    base: str  # the base type's name: text, varchar, bpchar, citext, uuid, int4 ...
    category: str  # pg_type.typcategory: S string, U user-defined (uuid), A array, N numeric ...
    max_length: int | None = None  # varchar(n) / char(n)
    not_null: bool = False

    @property
    def text_like(self) -> bool:
        return self.category == "S"


_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), b.typname, b.typcategory,
       CASE WHEN b.typname IN ('varchar', 'bpchar')
            AND (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) > 4
            THEN (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) - 4 END,
       a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


def column_types(conn: psycopg.Connection, relation: sql.Composable) -> dict[str, ColumnType]:
    """The columns of `relation` (an identifier or schema-qualified name) and their types."""
    rows = conn.execute(_TYPES, (relation.as_string(conn),)).fetchall()
    return {r[0]: ColumnType(r[1], r[2], r[3], r[4], r[5]) for r in rows}


def salt_check(salt: str | None) -> str | None:
    """The digest of a fixed text under the salt, as a mask would make it: the manifest keeps it
    so a later run can tell it was given the same salt. It reveals no more than any masked value
    of the copy does."""
    return hashlib.sha256(salt.encode() + SALT_PROBE).hexdigest()[:16] if salt else None


def load_salt(conn: psycopg.Connection, salt: str | None) -> None:
    """Put the salt where the expressions read it: a temporary table of this session, filled by
    COPY (COPY data is never written to the server log). Without a salt the table stays empty and
    salted expressions yield NULL, which config load makes impossible for the rules that need it."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (salt bytea NOT NULL)").format(
                sql.Identifier("pgcarry_mask_salt")))
    except psycopg.errors.InsufficientPrivilege:
        raise PreflightError("masking needs a temporary table (it holds the salt) and the role may "
                             "not create one", hint="GRANT TEMP ON DATABASE <db> TO <role>") from None
    conn.execute(sql.SQL("TRUNCATE {}").format(SALT_TABLE))
    if salt:
        with conn.cursor().copy(sql.SQL("COPY {} (salt) FROM STDIN").format(SALT_TABLE)) as cp:
            cp.write_row((salt.encode(),))


@dataclass(frozen=True)
class MaskSpec:
    """A rule's mask without its table and column: kind and options (defaults filled in). Two
    columns with equal specs mask equal values alike; the manifest records it (never the salt)."""

    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, kind: str, options: dict[str, Any]) -> MaskSpec:
        return cls(kind, tuple(sorted(options.items())))

    def get(self, name: str) -> Any:
        return dict(self.options)[name]

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def salted(self) -> bool:
        """Whether the mask is a salted digest: distinct inputs stay distinct (safe on keys)."""
        return self.kind in ("hash", "email") or (self.kind == "regex" and self.get("unique"))

    def describe(self) -> str:
        """"kind hash (length = 16)": the kind and the options that differ from their defaults."""
        defaults = MASK_OPTIONS[self.kind]
        opts = ", ".join(f"{k} = {v!r}" for k, v in self.options if v != defaults.get(k)
                         and k not in ("regex", "replace", "flags"))
        return f"kind {self.kind}" + (f" ({opts})" if opts else "")


def fit(spec: MaskSpec, t: ColumnType) -> str | None:
    """Why `spec` cannot mask a column of type `t` (None: it can; data-dependent limits such as
    a regex's output length are checked on production's rows instead)."""
    if spec.kind == "null" and t.not_null:
        return "kind null on a NOT NULL column"
    if spec.kind in ("regex", "email") and not t.text_like:
        return f"kind {spec.kind} needs a text column (text, varchar, char, citext), not {t.name}"
    if spec.kind == "hash" and not (t.text_like or t.base == "uuid"):
        return (f"kind hash needs a text or uuid column, not {t.name} (mask other types with "
                "kind value or null: a digest of an integer key would collide and move sequences)")
    if spec.kind == "hash" and t.base == "uuid" and (
            spec.get("prefix") or spec.get("suffix") or spec.get("length") != UUID_HEX):
        return "kind hash on a uuid column gives a digest formatted as a uuid: no prefix, suffix or length"
    width = static_width(spec)
    if t.max_length is not None and width is not None and width > t.max_length:
        return f"the masked values are {width} characters long, the column is {t.name}"
    return None


def static_width(spec: MaskSpec) -> int | None:
    """The length of every masked value, when the rule alone decides it."""
    if spec.kind == "hash":
        return len(spec.get("prefix")) + int(spec.get("length")) + len(spec.get("suffix"))
    if spec.kind == "email" and not spec.get("keep-domain"):
        return 1 + int(spec.get("length")) + 1 + len(spec.get("domain"))
    if spec.kind == "value":
        return len(spec.get("value"))
    return None


def _digest(col: sql.Composable, t: ColumnType, length: int) -> sql.Composable:
    """The first `length` hex digits of sha256(salt || value); citext values are lower-cased first,
    so values citext treats as equal (a key and its references) get one digest."""
    text = sql.SQL("lower({}::text)" if t.base == "citext" else "{}::text").format(col)
    return sql.SQL("left(encode(sha256({} || convert_to({}, 'UTF8')), 'hex'), {})").format(
        SALT, text, sql.Literal(length))


def expression(spec: MaskSpec, col: sql.Composable, t: ColumnType) -> sql.Composable:
    """SQL for the masked value of `col` (of type `t`): NULL stays NULL (kind null: always NULL)."""
    lit = sql.Literal
    if spec.kind == "null":
        return sql.SQL("NULL::{}").format(sql.SQL(t.name))
    if spec.kind == "value":
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE {}::{} END").format(
            col, lit(spec.get("value")), sql.SQL(t.name))
    if spec.kind == "regex":
        out = sql.SQL("regexp_replace({}::text, {}, {}, {})").format(
            col, lit(spec.get("regex")), lit(spec.get("replace")), lit(spec.get("flags")))
        if spec.get("unique"):
            out = sql.SQL("{} || '-' || {}").format(out, _digest(col, t, int(spec.get("length"))))
        return out
    if spec.kind == "hash" and t.base == "uuid":
        return sql.SQL("{}::uuid").format(_digest(col, t, UUID_HEX))
    digest = _digest(col, t, int(spec.get("length")))
    if spec.kind == "hash":
        return sql.SQL("{} || {} || {}").format(lit(spec.get("prefix")), digest, lit(spec.get("suffix")))
    if spec.get("keep-domain"):
        domain: sql.Composable = sql.SQL("coalesce(substring({}::text from '@([^@]*)$'), {})").format(
            col, lit(MASK_OPTIONS["email"]["domain"]))
    else:
        domain = lit(spec.get("domain"))
    return sql.SQL("'u' || {} || '@' || {}").format(digest, domain)

