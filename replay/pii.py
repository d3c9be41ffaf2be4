"""The PII guard: production's values of the masked tables kept in side tables (the rows that
existed in production at T0), written back over the masked rows, and the check that no masked
value remains. Masked keys and the columns that reference them are matched through the
deterministic mask (mask(production's value) = masked value), so rows the test side created keep
their references; other masked columns by the row's key (primary key or REPLICA IDENTITY index),
rows of keyless tables whole. The restore runs with session_replication_role = replica: no trigger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.capture import mask
from pgcarry.changelog.base import ChangeLog
from pgcarry.errors import ConfigError
from pgcarry.replay.fold import Folder, TableFold
from pgcarry.replay.plan import bytea_text
from pgcarry.replay.run import replica_role
from pgcarry.replay.stage import copy_into
from pgcarry.schemas.change import DELETE, INSERT
from pgcarry.schemas.config import Config, ReplayConfig
from pgcarry.schemas.manifest import Manifest, MaskRecord, TableInfo

SCHEMA = "pgcarry_unmask"
GONE = "pgcarry_gone"  # side-table rows production deleted after T0: only their keys are restored
_G, _N, _TID, _OID = (sql.Identifier(n) for n in ("pgcarry_g", "pgcarry_n", "pgcarry_tid", "pgcarry_oid"))


@dataclass
class Table:
    """A masked relation: as captured (the manifest) and as it is named in the target."""

    info: TableInfo
    target: tuple[str, str]
    rename: dict[str, str]  # captured column -> target column

    @property
    def masks(self) -> dict[str, MaskRecord]:
        return {m.column: m for m in self.info.masks}

    @property
    def key(self) -> list[str]:
        return self.info.mask_key

    @property
    def side(self) -> sql.Identifier:
        """Its side table: the name, cut to fit 63 bytes, plus a digest that keeps long names apart."""
        name = self.info.qualified
        tag = hashlib.sha256(name.encode()).hexdigest()[:8]
        return sql.Identifier(SCHEMA, f"{name.encode()[:50].decode(errors='ignore')}_{tag}")

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(*self.target)

    def tname(self, column: str) -> str:
        """A captured column's name in the target."""
        return self.rename.get(column, column)

    def tcol(self, column: str, alias: str | None = "t") -> sql.Identifier:
        return sql.Identifier(alias, self.tname(column)) if alias else sql.Identifier(self.tname(column))

    @property
    def side_columns(self) -> list[str]:
        """The key and the masked columns; every column of a keyless table (matched whole)."""
        if not self.key:
            return [c.name for c in self.info.columns if not c.generated]
        return list(dict.fromkeys([*self.key, *self.masks]))


def tables(manifest: Manifest, replay: ReplayConfig) -> list[Table]:
    """The manifest's masked relations, with the renames of [replay.tables]."""
    out = []
    for info in manifest.tables.values():
        if not info.masks:
            continue
        pol = replay.table(info.qualified)
        schema, _, name = (pol.rename_to or "").partition(".")
        target = (schema, name) if pol.rename_to else (info.schema_name, info.name)
        out.append(Table(info, target, dict(pol.rename_columns)))
    return out


def refuse_unready(manifest: Manifest, cfg: Config, test_dsn: str | None) -> None:
    """Before a cutover or rehearsal touches anything: the salt of start, and (given the test
    database) every masked table's key found there (a rename the config maps)."""
    require_salt(manifest, cfg.salt)
    if test_dsn is None:
        return
    with psycopg.connect(test_dsn, autocommit=True) as conn:
        problems = unmatched(conn, tables(manifest, cfg.replay))
    if problems:
        raise ConfigError(problems[0], hint="map the rename in [replay.tables] rename-columns / rename-to")


def require_salt(manifest: Manifest, salt: str | None) -> None:
    """Refuse (before anything changes) a missing salt, or one other than start's."""
    if manifest.mask_salt_check is None:
        return
    if salt is None:
        raise ConfigError("the test copy was masked with a salt, and none is given",
                          hint="set PGCARRY_MASK_SALT (or [masking] salt) to the salt used at start")
    if mask.salt_check(salt) != manifest.mask_salt_check:
        raise ConfigError("the masking salt differs from the one used at start",
                          hint="set PGCARRY_MASK_SALT (or [masking] salt) to the salt used at start")


def unmatched(conn: psycopg.Connection, masked: list[Table]) -> list[str]:
    """The key columns a masked row is matched on that `conn`'s tables (the test database's) lack:
    a column renamed without `rename-columns`. A table it dropped has nothing to restore."""
    out = []
    for t in masked:
        cols = _present(conn, t)
        missing = [c for c in t.key if cols is not None and c not in cols]
        if missing:
            out.append(f"{'.'.join(t.target)} has no column {t.tname(missing[0])!r}, "
                       f"the key its masked rows are matched on")
    return out


# -- keeping production's values -----------------------------------------------------------------

def _fold(log: ChangeLog, masked: list[Table]) -> dict[str, TableFold]:
    wanted = {t.info.qualified for t in masked}
    folder = Folder(keys={t.info.qualified: t.info.identity_key for t in masked if t.info.identity_key})
    for t in log.transactions(None):
        for ch in t.changes:
            if ch.relation in wanted:
                folder.add(ch)
    return folder.tables


def _values(images: Iterable[dict[str, Any]], columns: list[str],
            types: dict[str, mask.ColumnType]) -> Iterable[list[Any]]:
    hexed = {c for c in columns if types[c].base == "bytea"}
    for image in images:
        yield [bytea_text(image.get(c)) if c in hexed else image.get(c) for c in columns]


def _scratch(conn: psycopg.Connection, t: Table, columns: list[str]) -> sql.Identifier:
    name = sql.Identifier("pgcarry_unmask_scratch")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
        name, sql.SQL(", ").join(map(sql.Identifier, columns)), t.side))
    return name


def _adjust(conn: psycopg.Connection, t: Table, fold: TableFold) -> None:
    """Keep only the rows that existed at T0: drop what production inserted since (a test row
    with the same key must not receive its values), add back what it deleted since (a masked
    key still needs its real value, for the replay to delete the row)."""
    types = mask.column_types(conn, t.side)
    if not t.key:
        cols = t.side_columns
        tmp = _scratch(conn, t, cols)
        copy_into(conn, tmp, cols, _values(fold.inserts(), cols, types))
        conn.execute(sql.SQL(
            "DELETE FROM {s} WHERE ctid IN (SELECT x.ctid FROM (SELECT ctid, {r} AS r, row_number() "
            "OVER (PARTITION BY {r}) AS n FROM {s} p) x JOIN (SELECT {r} AS r, row_number() OVER "
            "(PARTITION BY {r}) AS n FROM {i} p) y USING (r, n))").format(
                s=t.side, i=tmp, r=_row_text(cols)))
        return
    inserted = [dict(zip(fold.pk, r.key)) for r in fold.rows.values() if r.op == INSERT]
    if inserted:
        tmp = _scratch(conn, t, t.key)
        copy_into(conn, tmp, t.key, _values(inserted, t.key, types))
        conn.execute(sql.SQL("DELETE FROM {} p USING {} k WHERE {}").format(
            t.side, tmp, _on(t.key, "p", "k")))
    if any(m.linked for m in t.info.masks):
        gone = [r.base for r in fold.rows.values() if r.op == DELETE]
        copy_into(conn, t.side, [*t.side_columns, GONE],
                  ([*v, True] for v in _values(gone, t.side_columns, types)))


def keep(src: psycopg.Connection, dst: psycopg.Connection, masked: list[Table],
         log: ChangeLog) -> dict[str, int]:
    """Copy production's rows of each masked table that existed at T0 (production now, corrected
    by the log since T0) into side tables of `dst`; the caller commits. Re-runnable."""
    dst.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    folds = _fold(log, masked)
    out = {}
    for t in masked:
        prod = sql.Identifier(t.info.schema_name, t.info.name)
        types = mask.column_types(src, prod)
        cols = sql.SQL(", ").join(map(sql.Identifier, t.side_columns))
        dst.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t.side))
        dst.execute(sql.SQL("CREATE TABLE {} ({}, {} boolean NOT NULL DEFAULT false)").format(
            t.side, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c].name))
                                       for c in t.side_columns), sql.Identifier(GONE)))
        with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, prod)) as cin, \
                dst.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(t.side, cols)) as cout:
            for chunk in cin:
                cout.write(chunk)
        if t.info.qualified in folds:
            _adjust(dst, t, folds[t.info.qualified])
        (out[t.info.qualified],) = dst.execute(sql.SQL("SELECT count(*) FROM {} WHERE NOT {}").format(
            t.side, sql.Identifier(GONE))).fetchone()  # type: ignore[misc]
    return out


# -- restoring and checking ----------------------------------------------------------------------

def _on(columns: list[str], a: str, b: str, left: Table | None = None) -> sql.Composable:
    """`a.c = b.c AND ...` (with `left`, a's columns take their target names)."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(left.tcol(c, a) if left else sql.Identifier(a, c), sql.Identifier(b, c))
        for c in columns)


def _row_text(columns: list[str], alias: str = "p", exprs: dict[str, sql.Composable] | None = None,
              table: Table | None = None) -> sql.Composable:
    """ROW(c::text, ...)::text: a row's values as one comparable text (json, xml and point have
    no equality; NULL and '' stay apart)."""
    parts = [(exprs or {}).get(c) or (table.tcol(c, alias) if table else sql.Identifier(alias, c))
             for c in columns]
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.SQL("({})::text").format(p) for p in parts))


def _present(conn: psycopg.Connection, t: Table) -> set[str] | None:
    """The captured columns the target table still has (None: the table is gone)."""
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                        "AND attnum > 0 AND NOT attisdropped", (t.ident.as_string(conn),)).fetchall()
    names = {r[0] for r in rows}
    return {c.name for c in t.info.columns if t.tname(c.name) in names} if names else None


def _masked_expr(conn: psycopg.Connection, t: Table, column: str, alias: str = "p") -> sql.Composable:
    m = t.masks[column]
    types = mask.column_types(conn, t.side)
    return mask.expression(mask.MaskSpec.of(m.kind, m.options), sql.Identifier(alias, column), types[column])


def _root(by_name: dict[str, Table], t: Table, m: MaskRecord) -> tuple[Table, str]:
    """The table and column whose production values a linked column maps through."""
    if m.via:
        return by_name[m.via[0]], m.via[1]
    return t, m.column


def _mapping(conn: psycopg.Connection, root: Table, column: str) -> sql.Composable:
    """(real, masked) pairs of every production value of a linked column."""
    c = sql.Identifier("p", column)
    return sql.SQL("(SELECT DISTINCT {c}::text AS real, ({m})::text AS masked FROM {s} p "
                   "WHERE {c} IS NOT NULL)").format(c=c, m=_masked_expr(conn, root, column), s=root.side)


def _keyless_groups(conn: psycopg.Connection, t: Table, cols: list[str]) -> tuple[sql.Composable, sql.Composable]:
    """The text a masked row shows in the target, and the same text computed from production's
    row: equal when the target row is that production row, still masked."""
    masked = {c: _masked_expr(conn, t, c) for c in cols if c in t.masks}
    return _row_text(cols, "t", table=t), _row_text(cols, "p", masked)


def _restore_keyless(conn: psycopg.Connection, t: Table, cols: list[str]) -> int:
    """Pair each masked target row with one production row of the same masked image (rows that
    are equal in everything the copy shows are interchangeable) and write the values back; rows
    the mask left as they were need nothing."""
    gt, gp = _keyless_groups(conn, t, cols)
    sets = sql.SQL(", ").join(sql.SQL("{} = x.{}").format(t.tcol(c, None), sql.Identifier(c))
                              for c in cols if c in t.masks)
    q = sql.SQL(
        "WITH s AS (SELECT tableoid AS {oid}, ctid AS {tid}, {gt} AS {g}, row_number() OVER "
        "(PARTITION BY {gt}) AS {n} FROM {target} t), "
        "p AS (SELECT p.*, {gp} AS {g}, row_number() OVER (PARTITION BY {gp}) AS {n} FROM {side} p "
        "WHERE NOT p.{gone} AND {gp} IS DISTINCT FROM {real}) "
        "UPDATE {target} t SET {sets} FROM (SELECT s.{oid}, s.{tid}, p.* FROM s JOIN p USING ({g}, {n})) x "
        "WHERE t.tableoid = x.{oid} AND t.ctid = x.{tid}").format(
        oid=_OID, tid=_TID, gt=gt, g=_G, n=_N, target=t.ident, gp=gp, side=t.side, gone=sql.Identifier(GONE),
        sets=sets, real=_row_text(cols))
    return conn.execute(q).rowcount


def _restore_rows(conn: psycopg.Connection, t: Table, cols: list[str]) -> int:
    plain = [c for c in cols if c in t.masks and not t.masks[c].linked]
    if not plain:
        return 0
    sets = sql.SQL(", ").join(sql.SQL("{} = p.{}").format(t.tcol(c, None), sql.Identifier(c)) for c in plain)
    return conn.execute(sql.SQL("UPDATE {} t SET {} FROM {} p WHERE NOT p.{} AND {} AND ({})").format(
        t.ident, sets, t.side, sql.Identifier(GONE), _on(t.key, "t", "p", t), _differ(t, plain))).rowcount


def _differ(t: Table, cols: list[str]) -> sql.Composable:
    return sql.SQL(" OR ").join(sql.SQL("{}::text IS DISTINCT FROM p.{}::text").format(
        t.tcol(c), sql.Identifier(c)) for c in cols)


def restore(conn: psycopg.Connection, masked: list[Table], salt: str | None) -> dict[str, int]:
    """Write production's values (the side tables in `conn`'s database) over the masked rows of
    the target tables: linked columns by value first (keys become production's), then the other
    masked columns by key, or whole rows; the caller commits. Rows updated per table."""
    replica_role(conn)
    mask.load_salt(conn, salt)
    by_name = {t.info.qualified: t for t in masked}
    out: dict[str, int] = {}
    present = {t.info.qualified: _present(conn, t) for t in masked}
    for t in masked:
        for c, m in t.masks.items():
            if m.linked and c in (present[t.info.qualified] or ()):
                root, rc = _root(by_name, t, m)
                n = conn.execute(sql.SQL("UPDATE {} t SET {} = r.real::{} FROM {} r WHERE {}::text = "
                                         "r.masked").format(
                    t.ident, t.tcol(c, None), sql.SQL(_target_type(conn, t, c)),
                    _mapping(conn, root, rc), t.tcol(c))).rowcount
                out[t.info.qualified] = out.get(t.info.qualified, 0) + n
    for t in masked:
        cols = present[t.info.qualified]
        if cols:
            n = _restore_rows(conn, t, sorted(cols)) if t.key else _restore_keyless(
                conn, t, [c for c in t.side_columns if c in cols])
            out[t.info.qualified] = out.get(t.info.qualified, 0) + n
    return out


def _target_type(conn: psycopg.Connection, t: Table, column: str) -> str:
    return mask.column_types(conn, t.ident)[t.tname(column)].name


def remaining(conn: psycopg.Connection, masked: list[Table], salt: str | None) -> dict[str, int]:
    """Rows of the target tables that existed in production and still hold a masked value
    (compared with production's values in the side tables), per table: want all 0."""
    mask.load_salt(conn, salt)
    by_name = {t.info.qualified: t for t in masked}
    out = {}
    for t in masked:
        cols = _present(conn, t)
        if not cols:
            continue
        n = 0
        if t.key:
            mcols = sorted(c for c in cols if c in t.masks)
            (n,) = conn.execute(sql.SQL("SELECT count(*) FROM {} t JOIN {} p ON {} WHERE NOT p.{} "
                                        "AND ({})").format(
                t.ident, t.side, _on(t.key, "t", "p", t), sql.Identifier(GONE),
                _differ(t, mcols))).fetchone()  # type: ignore[misc]
            for c in mcols:
                if t.masks[c].linked:
                    root, rc = _root(by_name, t, t.masks[c])
                    (k,) = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE {}::text IN (SELECT "
                                                "masked FROM {} r WHERE masked <> real)").format(
                        t.ident, t.tcol(c), _mapping(conn, root, rc))).fetchone()  # type: ignore[misc]
                    n += k
        else:
            kc = [c for c in t.side_columns if c in cols]
            gt, gp = _keyless_groups(conn, t, kc)
            (n,) = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE {} IN (SELECT {} FROM {} p "
                                        "WHERE NOT p.{} AND {} IS DISTINCT FROM {})").format(
                t.ident, gt, gp, t.side, sql.Identifier(GONE), gp, _row_text(kc))).fetchone()  # type: ignore[misc]
        out[t.info.qualified] = int(n)
    return out


def kept(conn: psycopg.Connection) -> bool:
    """Whether `conn`'s database holds production's values (a cutover or rehearsal kept them)."""
    return conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (SCHEMA,)).fetchone()[0]  # type: ignore[index]
