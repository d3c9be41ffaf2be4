"""Benchmark: replay 100,000 captured shop changes three ways on identical copies of the target.

(a) `pgcarry replay` in mode net, (b) one INSERT/UPDATE/DELETE per change in commit order through
psycopg 3 pipeline mode in one transaction, (c) COPY of the final net rows into empty tables (the
lower bound), and (d) reading and decoding the log without folding or writing anything (the floor
any replay of this log pays on top of c). Run: .venv/bin/python bench/replay.py [--changes N];
prints the times and b/a, a/c, (d+c)/c.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from pgcarry.playground import shop
from pgcarry.progress import Progress
from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.playground.localpg import LocalCluster
from pgcarry.replay import reader, replay
from pgcarry.replay.fold import fold
from pgcarry.schemas import config as config_mod

TXNS = 100


def _workload(dsn: str, changes: int) -> None:
    """60% inserts (orders, items, payments), 30% updates (orders, products), 10% deletes (items)."""
    per = changes // TXNS
    orders, status, stock, deletes = per * 15 // 100, per * 20 // 100, per * 10 // 100, per // 10
    with psycopg.connect(dsn, autocommit=True) as c:
        for _ in range(TXNS):
            with c.transaction():
                c.execute("CREATE TEMP TABLE IF NOT EXISTS new_orders (id uuid)")
                c.execute("TRUNCATE new_orders")
                c.execute("WITH o AS (INSERT INTO orders (user_id, total) SELECT (SELECT id FROM "
                          "profiles ORDER BY random() LIMIT 1), 10 FROM generate_series(1, %s) "
                          "RETURNING id) INSERT INTO new_orders SELECT id FROM o", (orders,))
                c.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                          "SELECT o.id, 1 + (random() * 99)::int, 1, 9.99 FROM new_orders o, "
                          "generate_series(1, 2)")
                c.execute("INSERT INTO order_payments (order_id, amount, card_number, card_holder) "
                          "SELECT id, 19.98, '4111', 'holder' FROM new_orders")
                c.execute("UPDATE orders SET status = 'shipped' WHERE id IN (SELECT id FROM orders "
                          "WHERE status = 'pending' ORDER BY random() LIMIT %s)", (status,))
                for _ in range(stock):
                    c.execute("UPDATE products SET stock_quantity = stock_quantity - 1 "
                              "WHERE id = 1 + (random() * 99)::int")
                c.execute("DELETE FROM order_items WHERE id IN (SELECT id FROM order_items "
                          "ORDER BY random() LIMIT %s)", (deletes,))


def _prepare(src: LocalCluster, tgt: LocalCluster, work: Path, changes: int) -> Path:
    sdsn = src.createdb("prod")
    with psycopg.connect(sdsn, autocommit=True) as c:
        shop.create(c)
        c.execute("ALTER TABLE order_items DISABLE TRIGGER order_items_stock")  # exact mix
        shop.seed(c, random.Random(1), profiles=1000, products=100, coupons=10, orders=0)
        c.execute("INSERT INTO orders (user_id, total) SELECT (SELECT id FROM profiles LIMIT 1), 1 "
                  "FROM generate_series(1, 20000)")
        c.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                  "SELECT id, 1 + (random() * 99)::int, 1, 1 FROM orders")
    cfg = work / "pgcarry.toml"
    cfg.write_text(f'[source]\ndsn = "{sdsn}"\n[log]\npath = "log.db"\n' + shop.POLICY_TOML)
    tdsn = tgt.createdb("copy")
    pg = [sys.executable, "-m", "pgcarry"]
    subprocess.run(pg + ["start", "--copy-to", tdsn, "--set-replica-identity"], cwd=work, check=True,
                   capture_output=True)
    _workload(sdsn, changes)
    subprocess.run(pg + ["capture", "--until", "current"], cwd=work, check=True, capture_output=True)
    return cfg


def _settle(tgt: LocalCluster) -> None:
    """Flush what the clones and earlier runs wrote, so no run pays for another's checkpoint."""
    with psycopg.connect(tgt.dsn(), autocommit=True) as c:
        c.execute("CHECKPOINT")


def _clone(tgt: LocalCluster, name: str) -> str:
    with psycopg.connect(tgt.dsn(), autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE copy").format(sql.Identifier(name)))
    return tgt.dsn(name)


def _statement(ch, cols: tuple[str, ...], key: tuple[str, ...]) -> bytes:
    tab = sql.Identifier(ch.schema, ch.table)
    eq = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key]
    if ch.action == "I":
        q = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            tab, sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(sql.Placeholder() * len(cols)))
    elif ch.action == "U":
        q = sql.SQL("UPDATE {} SET {} WHERE {}").format(tab, sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(k)) for k in cols), sql.SQL(" AND ").join(eq))
    else:
        q = sql.SQL("DELETE FROM {} WHERE {}").format(tab, sql.SQL(" AND ").join(eq))
    return q.as_bytes(None)


def _baseline(log: SQLiteLog, dsn: str) -> float:
    """One statement per captured change, commit order, pipeline mode, one transaction; the SQL
    text of each (table, action, columns) is built once, so the server can prepare it."""
    cache: dict[tuple[object, ...], bytes] = {}
    t = time.perf_counter()
    with psycopg.connect(dsn) as c:
        c.execute("SET LOCAL session_replication_role = replica")
        with c.pipeline(), c.cursor() as cur:
            for txn in log.transactions():
                for ch in txn.changes:
                    new = ch.new if ch.action in "IU" else {}
                    old = ch.old if ch.action in "UD" else {}
                    cols, key = tuple(new), tuple(ch.pk) if ch.action != "I" else ()
                    k = (ch.relation, ch.action, cols, key)
                    q = cache.get(k) or cache.setdefault(k, _statement(ch, cols, key))
                    cur.execute(q, [*new.values(), *(old[c] for c in key)])
    return time.perf_counter() - t


def _copy_lower_bound(log: SQLiteLog, dsn: str) -> tuple[float, int]:
    """COPY the final images of every net insert and update into empty tables."""
    tables = fold(ch for t in log.transactions() for ch in t.changes)
    rows = {rel: [r.final_image() for r in tf.rows.values() if r.op != "D"] for rel, tf in tables.items()}
    with psycopg.connect(dsn, autocommit=True) as c:
        for rel in rows:
            c.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier(*rel.split("."))))
    n = sum(len(v) for v in rows.values())
    t = time.perf_counter()
    with psycopg.connect(dsn) as c:
        c.execute("SET LOCAL session_replication_role = replica")
        for rel, images in rows.items():
            if not images:
                continue
            cols = list(images[0])
            q = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(*rel.split(".")), sql.SQL(", ").join(map(sql.Identifier, cols)))
            with c.cursor().copy(q) as cp:
                for img in images:
                    cp.write_row([img.get(k) for k in cols])
    return time.perf_counter() - t, n


def _read_floor(log: SQLiteLog) -> float:
    """Read every change from the log and decode it once, as replay's reader does, and nothing
    else: what any replay of this log pays before folding or writing a row."""
    t = time.perf_counter()
    with reader.no_gc():
        for *_, raw in log.raw_changes():
            reader.decode(raw)
    return time.perf_counter() - t


class _Timed(Progress):
    """--profile: each step's note with the seconds since the round began."""

    def __init__(self, t: float) -> None:
        self.t = t

    def note(self, text: str) -> None:
        print(f"  {time.perf_counter() - self.t:6.2f} {text}")


def _round(tgt: LocalCluster, cfg: config_mod.Config, log: SQLiteLog, i: int, profile: bool
           ) -> tuple[float, float, float, float, int, int]:
    """One timing of each of (a)-(d), each of (a)-(c) on a fresh clone of the overwritten target."""
    a_dsn, b_dsn, c_dsn = (_clone(tgt, f"{n}_{i}") for n in ("a_net", "b_pipeline", "c_copy"))
    _settle(tgt)
    t = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        rep = prof.runcall(replay, cfg, log, a_dsn, progress=_Timed(t))
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    else:
        rep = replay(cfg, log, a_dsn)
    ta = time.perf_counter() - t
    _settle(tgt)
    tb = _baseline(log, b_dsn)
    _settle(tgt)
    tc, rows = _copy_lower_bound(log, c_dsn)
    td = _read_floor(log)
    net = sum(sum(v.values()) for v in rep.applied.values())
    print(f"  round {i + 1}: a {ta:.2f} s, b {tb:.2f} s, c {tc:.2f} s, d {td:.2f} s")
    return ta, tb, tc, td, net, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3,
                    help="time each run this many times on fresh clones; the best of each is compared")
    ap.add_argument("--profile", action="store_true", help="cProfile the net replay")
    args = ap.parse_args()
    with LocalCluster("bench-src") as src, LocalCluster("bench-tgt") as tgt, \
            tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"preparing: shop schema, T0 copy, {args.changes} production changes, capture ...")
        cfg_path = _prepare(src, tgt, work, args.changes)
        cfg = config_mod.parse(config_mod.read_toml(cfg_path), base=work)
        log = SQLiteLog(work / "log.db", readonly=True)
        s = log.summary()
        n = sum(sum(v.values()) for v in s.tables.values())
        mix = {a: sum(v.get(a, 0) for v in s.tables.values()) for a in ("insert", "update", "delete")}
        print(f"captured {n} changes in {s.transactions} transactions: {mix}")
        runs = [_round(tgt, cfg, log, i, args.profile) for i in range(max(1, args.rounds))]
        ta, tb, tc, td = (min(r[k] for r in runs) for k in range(4))
        net, rows = runs[0][4], runs[0][5]
        print(f"best of {len(runs)}:")
        print(f"(a) pgcarry replay --mode net : {ta:7.2f} s  ({net} net row operations)")
        print(f"(b) per-change pipelined      : {tb:7.2f} s")
        print(f"(c) COPY of final net rows    : {tc:7.2f} s  ({rows} rows)")
        print(f"(d) read + decode the log only: {td:7.2f} s  (no fold, no writes)")
        print(f"b/a = {tb / ta:.2f} (target >= 3)   a/c = {ta / tc:.2f} (target <= 3)   "
              f"(d+c)/c = {(td + tc) / tc:.2f} (any replay of this log pays at least d and c)")
        log.close()


if __name__ == "__main__":
    main()
