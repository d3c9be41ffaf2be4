"""The shop (uuid keys on profiles, orders and order_shipping) with a real column conflict — both
sides changed the status of the same uuid-keyed order — through `replay` and through `cutover`:
both exit 0, and the conflict is in the report, the journal and --json with its key as text.
The cutover also reads production's sequence positions after the fence: coupon and invoice
numbers production handed out and deleted are not handed out again."""

from __future__ import annotations

import json
import random

import psycopg

from pgcarry.cutover.demo import MASKS
from pgcarry.playground import shop
from tests.helpers import cli, cli_json, execute, query, write_config

COUPONS = '\n[replay.tables."public.coupons"]\ninsert-exists = "target-wins"\n'
INVOICES = ("CREATE SEQUENCE invoice_no START 5000",  # unowned: only named in a default
            "ALTER TABLE orders ADD COLUMN invoice int DEFAULT nextval('invoice_no')")


def _shop(source_dsn, target_dsn, workdir, extra=""):
    with psycopg.connect(source_dsn, autocommit=True) as c:
        shop.create(c)
        c.execute(";".join(INVOICES))
        shop.seed(c, random.Random(1))
    write_config(workdir, source_dsn, extra=shop.POLICY_TOML + extra + COUPONS)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    order = query(source_dsn, "SELECT id::text FROM orders ORDER BY created_at, id LIMIT 1")[0][0]
    with psycopg.connect(source_dsn, autocommit=True) as c:
        shop.traffic(c, random.Random(2))  # ships the first three orders
        c.execute("INSERT INTO coupons (code, discount) SELECT 'P' || i, 1 FROM generate_series(1, 3) i")
        c.execute("DELETE FROM coupons WHERE id = (SELECT max(id) FROM coupons)")
        c.execute("DELETE FROM orders WHERE invoice = (SELECT max(invoice) FROM orders)")
    execute(target_dsn, "UPDATE orders SET status = 'on hold' WHERE id = %s::uuid", params=(order,))
    return order


def _conflict(order):
    return {"table": "public.orders", "key": [order], "kind": "column", "column": "status",
            "decision": "source-wins"}


def _positions(dsn):
    return query(dsn, "SELECT (SELECT last_value FROM coupons_id_seq), "
                      "(SELECT last_value FROM invoice_no)")[0]


def test_uuid_keyed_conflict_through_replay(source_dsn, target_dsn, workdir):
    order = _shop(source_dsn, target_dsn, workdir)
    cli(workdir, "capture", "--until", "current")
    text = cli(workdir, "replay", "--to", target_dsn, "--dry-run").stdout
    assert f"({order})" in text
    out = cli_json(workdir, "replay", "--to", target_dsn)
    assert [{k: c[k] for k in _conflict(order)} for c in out["conflicts"]] == [_conflict(order)]
    (journaled,) = query(target_dsn, "SELECT conflicts FROM pgcarry.replay_journal")
    assert [{k: c[k] for k in _conflict(order)} for c in journaled[0]] == [_conflict(order)]
    assert query(target_dsn, "SELECT status FROM orders WHERE id = %s::uuid", (order,)) == [("shipped",)]
    assert _positions(target_dsn) == _positions(source_dsn)  # past the deleted ones
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_uuid_keyed_conflict_through_cutover(source_dsn, target_dsn, workdir):
    order = _shop(source_dsn, target_dsn, workdir, MASKS)
    before = _positions(source_dsn)
    res = cli(workdir, "cutover", "--from", target_dsn, "--yes")
    assert f"conflict: public.orders ({order}) column status: source-wins" in res.stdout
    again = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json").stdout)
    assert again["complete"]
    replayed = next(p for p in again["phases"] if p["phase"] == "replay")["detail"]
    assert [{k: c[k] for k in _conflict(order)} for c in replayed["conflicts"]] == [_conflict(order)]
    (journaled,) = query(source_dsn, "SELECT conflicts FROM pgcarry.replay_journal")
    assert [{k: c[k] for k in _conflict(order)} for c in journaled[0]] == [_conflict(order)]
    assert query(source_dsn, "SELECT status FROM orders WHERE id = %s::uuid", (order,)) == [("shipped",)]
    assert _positions(source_dsn) == before  # production's own positions, not the test side's
    coupon = query(source_dsn, "INSERT INTO coupons (code, discount) VALUES ('after', 1) RETURNING id")
    assert coupon == [(before[0] + 1,)]
