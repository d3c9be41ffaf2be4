"""`verify`: prove the replay landed — counts reconcile with the journal, every captured row's final
image is in the target under its policy (from the pre-replay images; a relation without a key:
its rows, image by image), no foreign-key orphans, sequences past their columns and production's
positions, no masked value left on a row that existed in production (where production's values
are kept beside the target: cutover, rehearse), and the user's SQL assertions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.changelog.base import ChangeLog
from pgcarry.replay import apply, catalog, journal, keyless, pii, sequences, session, stage
from pgcarry.replay import plan as plan_mod
from pgcarry.replay.fold import Folder
from pgcarry.replay.plan import TablePlan, key_label
from pgcarry.replay.policy import distinct_sql, merge_sql
from pgcarry.schemas.change import ACTION_NAMES
from pgcarry.schemas.config import Config, ReplayConfig
from pgcarry.schemas.lsn import Lsn
from pgcarry.schemas.manifest import Manifest

MAX_LISTED = 5
_id = sql.Identifier


@dataclass
class Check:
    name: str
    table: str
    ok: bool
    detail: str = ""


def _fold(log: ChangeLog, runs: list[dict[str, Any]], keys: dict[str, list[str]]
          ) -> tuple[Folder, dict[int, Folder]]:
    """The log up to the last run, folded; and per run, the fold of that run's own changes of
    relations without a key (each run matched their rows against the target as it then was)."""
    whole = Folder(keys=keys)
    per_run = {r["id"]: Folder(keys=keys) for r in runs}
    ends = [(Lsn.parse(r["last_lsn"]), r["id"]) for r in runs]
    i = 0
    for t in log.transactions(None):
        while i < len(ends) and t.commit_lsn > ends[i][0]:
            i += 1
        if i == len(ends):
            break
        for ch in t.changes:
            whole.add(ch)
            if not ch.pk and ch.relation not in keys:
                per_run[ends[i][1]].add(ch)
    return whole, per_run


def _keyless(conn: psycopg.Connection, tp: TablePlan, runs: list[dict[str, Any]],
             per_run: dict[int, Folder]) -> Check:
    parts = []
    for r in runs:
        fold = per_run[r["id"]].tables.get(tp.source)
        if fold is not None:
            decided = {c["lsn"]: c["decision"] for c in r["conflicts"] if c["table"] == tp.relation
                       and c["kind"] in ("update-missing", "delete-missing")}
            parts.append((r["id"], fold, decided))
    ok, detail = keyless.check(conn, tp, parts)
    return Check("final rows", tp.relation, ok, detail)


def _counts(runs: list[dict[str, Any]], folder: Folder) -> list[Check]:
    out = []
    journaled: dict[str, Counter[str]] = {}
    for r in runs:
        for rel, c in r["counts"].items():
            journaled.setdefault(c.get("source", rel), Counter()).update(c["captured"])
            if r["mode"] == "net" and "truncate" not in c["captured"]:
                a, s, n = c["applied"], c["skipped"], c["net"]
                bad = [k for k in ("insert", "update", "delete")
                       if a.get(k, 0) + s.get(k, 0) + (a.get("reinsert", 0) if k == "update" else 0)
                       != n[k]]
                if bad:
                    out.append(Check("counts", rel, False, f"run {r['id']}: applied+skipped != net "
                                     f"for {', '.join(bad)} (net {n}, applied {a}, skipped {s})"))
    logged = {rel: {ACTION_NAMES[a]: n for a, n in t.captured.items()} for rel, t in folder.tables.items()}
    for rel, log_counts in sorted(logged.items()):
        jc = dict(journaled.get(rel, {}))
        ok = jc == log_counts
        out.append(Check("counts", rel, ok, f"log {log_counts}" + ("" if ok else f" != journal {jc}")))
    return out


def _expected(tp: TablePlan, st: stage.Stage, c: str, truncated: bool) -> sql.Composable:
    n, b, x, t, bf = st.col("n", c), st.col("b", c), st.col("x", c), _id("t", c), _id("bf", c)
    had = sql.SQL("FALSE" if truncated else "{} IS NOT NULL").format(_id("bf", tp.key[0]))
    ie = bf if tp.rules.insert_exists == "target-wins" else n
    text = tp.text_compare(c)
    inserted = sql.SQL("(CASE WHEN {} THEN {} ELSE {} END)").format(had, ie, n)
    merged = merge_sql(tp.policy(c), bf, b, n, text)
    return sql.SQL(
        "CASE WHEN s.op = 'I' THEN {x} AND {i}"
        " WHEN s.op = 'U' AND {had} THEN {x} AND {m}"
        " WHEN s.op = 'U' THEN {u} ELSE false END").format(
        x=x, had=had, i=distinct_sql(t, inserted, text), m=distinct_sql(t, merged, text),
        u=distinct_sql(t, n, text))


def _images(conn: psycopg.Connection, st: stage.Stage) -> Check:
    tp = st.tp
    before = journal.find_before_table(conn, tp.relation)
    truncated = tp.fold.truncated_at is not None
    bf: sql.Composable = sql.SQL("(SELECT * FROM {} WHERE false)").format(st.target)
    if before is not None and not truncated:
        keys = sql.SQL(", ").join(map(_id, tp.key))
        bf = sql.SQL("(SELECT DISTINCT ON ({k}) * FROM {b} ORDER BY {k}, {r})").format(
            k=keys, b=before, r=_id(journal.RUN_COLUMN))
    flags = [_expected(tp, st, c, truncated) for c in st.columns]
    had = sql.SQL("FALSE" if truncated else "bf.{} IS NOT NULL").format(_id(tp.key[0]))
    q = sql.SQL("SELECT {k}, s.op, s.lsn, t.{k0} IS NOT NULL, {had}, ARRAY[{f}] FROM {s} s "
                "LEFT JOIN {t} t ON {on} LEFT JOIN {bf} bf ON {onb} ORDER BY s.lsn").format(
        k=st.key_select(), k0=_id(tp.key[0]), had=had, f=sql.SQL(", ").join(flags), s=st.ident,
        t=st.target, on=st.key_join(), bf=bf, onb=st.key_join("bf"))
    bad = []
    for *key, op, lsn, present, had_row, hits in conn.execute(q):
        want = op == "I" or (op == "U" and (had_row or tp.rules.update_missing == "reinsert"))
        if present != want:
            bad.append(f"key {key_label(tuple(key))} (lsn {Lsn(lsn)}): row "
                       f"{'missing' if want else 'present'}")
        elif present:
            cols = [c for c, h in zip(st.columns, hits) if h]
            if cols:
                bad.append(f"key {key_label(tuple(key))} (lsn {Lsn(lsn)}): {', '.join(cols)} differ")
    detail = f"{st.rows} rows checked" if not bad else "; ".join(bad[:MAX_LISTED]) + (
        f" (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else "")
    return Check("final images", tp.relation, not bad, detail)


def _production(runs: list[dict[str, Any]]) -> sequences.Production:
    """Production's sequence positions as the journal recorded them (the largest of all runs)."""
    out = sequences.Production()
    for r in runs:
        for name, v in ((r.get("sequences") or {}).get("production") or {}).items():
            if v is not None:
                out.next[name] = max(v, out.next.get(name, v))
    return out


def _sequences(conn: psycopg.Connection, tables: list[catalog.TargetTable],
               runs: list[dict[str, Any]]) -> list[Check]:
    """Each sequence the replayed tables use: its next value is past the largest value present
    and past production's own next value."""
    prod, out = _production(runs), []
    for u in sequences.used(conn, [t.oid for t in tables]):
        if u.increment < 0:
            continue
        pos = sequences.position(conn, u, prod)
        out.append(Check("sequence", u.relation, pos.ok, f"next value {pos.now}; past the largest "
                         f"value present: {pos.present}; production's next value: {pos.production}"))
    return out


def _assertions(conn: psycopg.Connection, cfg: Config) -> list[Check]:
    out = []
    for a in cfg.verify.assertions:
        try:
            with conn.transaction():
                row = conn.execute(a.sql).fetchone()  # the user's own SQL, from the config
            ok, detail = bool(row and row[0] is True), f"returned {row[0] if row else None}"
        except psycopg.Error as e:
            ok, detail = False, f"error: {e.diag.message_primary or e}"
        out.append(Check("assertion", a.name, ok, detail))
    return out


def _pii(conn: psycopg.Connection, cfg: Config, manifest: Manifest | None) -> list[Check]:
    """Production's values kept beside the target (a cutover or rehearsal) against the target's
    rows: a masked value of any kind left on a row that existed in production fails."""
    masked = pii.tables(manifest, cfg.replay) if manifest else []
    if manifest is None or not masked:
        return []
    if not pii.kept(conn):
        return [Check("pii guard", "-", True, "not checked: production's values are not kept in this "
                      "database (cutover and rehearse check them)")]
    pii.require_salt(manifest, cfg.salt)
    return [Check("pii guard", rel, n == 0, f"{n} rows of production still masked" if n else
                  "no masked value left") for rel, n in pii.remaining(conn, masked, cfg.salt).items()]


def verify(cfg: Config, log: ChangeLog, to: str) -> list[Check]:
    """Every check, passed or not, in a stable order."""
    with session.connect(to) as conn:
        runs = journal.runs(conn, cfg.source.slot)
        if not runs:
            return [Check("journal", "pgcarry.replay_journal", False,
                          f"no replay of slot {cfg.source.slot} recorded in the target")]
        manifest = log.read_manifest()
        folder, per_run = _fold(log, runs, manifest.identity_keys() if manifest else {})
        checks = _counts(runs, folder)
        rcfg = ReplayConfig.model_validate(runs[-1]["policy"])
        rels = [rcfg.table(r).rename_to or r for r in folder.tables]
        targets = catalog.read_tables(conn, rels)
        fkeys = catalog.read_foreign_keys(conn, list(targets.values()))
        p = plan_mod.build(folder.tables, targets, fkeys, rcfg, manifest)
        for i, tp in enumerate(p.ordered()):
            checks.append(_keyless(conn, tp, runs, per_run) if tp.keyless
                          else _images(conn, stage.load(conn, tp, i)))
        for fk in apply.touching(fkeys, set(p.tables)):
            found = apply.orphans(conn, fk, MAX_LISTED)
            checks.append(Check("foreign key", fk.child, not found,
                                f"{fk.name}: " + (f"orphans {found}" if found else "no orphans")))
        checks += _sequences(conn, [tp.target for tp in p.ordered() if tp.target], runs)
        checks += _pii(conn, cfg, manifest) + _assertions(conn, cfg)
        conn.rollback()
    return checks
