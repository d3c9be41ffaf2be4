"""Relations without a primary key (REPLICA IDENTITY FULL, e.g. pgbench_history): nothing can fold
their rows by key, so an insert-only one is replayed as plain inserts, once each, in commit order;
an UPDATE, DELETE or TRUNCATE on one is refused with a clear error (mode `net` only). The inserts
are COPYed into the target, one COPY per set of sent columns."""

from __future__ import annotations

import psycopg
from psycopg import sql

from pgcarry.errors import ReplayError
from pgcarry.replay import catalog, stage
from pgcarry.replay.fold import TableFold
from pgcarry.replay.plan import bytea_text
from pgcarry.schemas.change import ACTION_NAMES, INSERT, TRUNCATE
from pgcarry.schemas.config import Config


def split(folds: dict[str, TableFold]) -> dict[str, TableFold]:
    """Take the keyless relations out of `folds`; refuse those that are not insert-only. (A
    relation seen only through a TRUNCATE has no known key either; it stays for the plan.)"""
    out = {r: f for r, f in folds.items()
           if not f.pk and (f.plain or any(a != TRUNCATE for a in f.captured))}
    for rel, f in out.items():
        other = {a: n for a, n in f.captured.items() if a != INSERT and n}
        if other:
            raise ReplayError(
                "relation without a primary key has captured "
                f"{', '.join(sorted(ACTION_NAMES[a] for a in other))} changes",
                table=rel, hint="add a primary key before start, or set `ignore = true` for the "
                "table in [replay.tables]; only inserts can be replayed without a key")
        del folds[rel]
    return out


def apply(conn: psycopg.Connection, cfg: Config, keyless: dict[str, TableFold]
          ) -> dict[str, dict[str, int]]:
    """INSERT every captured row of each keyless relation into its target table."""
    applied: dict[str, dict[str, int]] = {}
    todo = {rel: cfg.replay.table(rel).rename_to or rel for rel in keyless
            if not cfg.replay.table(rel).ignore}
    targets = catalog.read_tables(conn, list(todo.values()))
    for rel, trel in todo.items():
        t = targets.get(trel)
        if t is None:
            raise ReplayError("the target has no such table", table=trel,
                              hint=f"set rename-to or ignore = true for {rel} in [replay.tables]")
        f = keyless[rel]
        ident = sql.Identifier(t.schema, t.name)
        groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
        for image in f.plain:
            groups.setdefault(tuple(image), []).append(image)
        n = 0
        for sent, images in groups.items():
            cols = [c for c in sent if c in t.columns and not t.columns[c].generated]
            hexed = [f.columns.get(c) == "bytea" for c in cols]
            stage.copy_into(conn, ident, cols, ([bytea_text(v) if h else v for v, h in
                                                  zip((image[c] for c in cols), hexed)]
                                                 for image in images))
            n += len(images)
        applied[trel] = {"insert": n}
    return applied


def journal_counts(keyless: dict[str, TableFold], applied: dict[str, dict[str, int]], cfg: Config
                   ) -> dict[str, dict[str, object]]:
    """The journal's per-relation counts for the keyless relations (the shape verify reads)."""
    out: dict[str, dict[str, object]] = {}
    for rel, f in keyless.items():
        trel = cfg.replay.table(rel).rename_to or rel
        if trel not in applied:
            continue
        n = f.captured.get(INSERT, 0)
        out[trel] = {"source": rel, "captured": {"insert": n}, "net": {"insert": n, "update": 0, "delete": 0},
                     "applied": applied[trel], "skipped": {"insert": 0, "update": 0, "delete": 0}}
    return out
