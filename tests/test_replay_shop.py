"""End to end on the shop schema through the real CLI: T0 copy (`start --copy-to`), production
traffic, test-side development, `capture --until current`, then replay and verify."""

from __future__ import annotations

import json
import random

import psycopg
import pytest

from pgcarry.playground import shop
from tests.helpers import cli, query, write_config

PROD_TABLES = ["profiles", "orders", "order_items", "order_shipping", "order_payments",
               "user_coupons", "categories"]


def _rows(dsn, table, columns):
    cols = ", ".join(columns)
    return query(dsn, f"SELECT {cols} FROM {table} ORDER BY 1")


def _columns(dsn, table):
    return [r[0] for r in query(dsn, "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                                     "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))]


def scenario(source_dsn, target_dsn, workdir, extra=""):
    """Build prod, copy it at T0, run both sides, capture. Returns facts for the assertions."""
    with psycopg.connect(source_dsn, autocommit=True) as c:
        shop.create(c)
        shop.seed(c, random.Random(1))
    write_config(workdir, source_dsn, extra=shop.POLICY_TOML + extra)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    t0_stock = dict(query(source_dsn, "SELECT id, stock_quantity FROM products"))
    with psycopg.connect(source_dsn, autocommit=True) as c:  # production keeps running
        facts = shop.traffic(c, random.Random(2))
        c.execute("INSERT INTO coupons (id, code, discount) VALUES (1001, 'PROD-1001', 7)")
        c.execute("UPDATE coupons SET id = 2000 WHERE id = 5")  # a primary-key change
        c.execute("INSERT INTO categories (id, parent_id, name) VALUES (100, NULL, 'sale'), "
                  "(101, 100, 'sale shoes'), (102, 3, 'running')")
        c.execute("UPDATE categories SET parent_id = 101 WHERE id = 2")
    with psycopg.connect(target_dsn, autocommit=True) as c:  # the test side develops
        c.execute("UPDATE products SET title = 'Product 1 (new look)', description = 'short now', "
                  "price = 12.50 WHERE id = 1")
        c.execute("UPDATE products SET title = title || ' v2' WHERE id IN (2, 3)")
        c.execute("UPDATE products SET stock_quantity = 500 WHERE id = 2")
        c.execute("INSERT INTO products (title, price, stock_quantity) VALUES ('Test-only', 1, 1)")
        c.execute("INSERT INTO coupons (id, code, discount) VALUES (1001, 'TEST-1001', 3)")
        c.execute("ALTER TABLE orders ADD COLUMN gift_note text NOT NULL DEFAULT 'none'")
    cli(workdir, "capture", "--until", "current")
    facts["t0_stock"] = t0_stock
    facts["test_stock"] = dict(query(target_dsn, "SELECT id, stock_quantity FROM products"))
    return facts


def _replay(workdir, target_dsn, *more, check=True):
    return cli(workdir, "replay", "--to", target_dsn, *more, check=check)


def test_shop_replay_carries_every_production_write(source_dsn, target_dsn, workdir):
    extra = '[replay.tables."public.coupons"]\ninsert-exists = "source-wins"\n'
    facts = scenario(source_dsn, target_dsn, workdir, extra)
    out = json.loads(_replay(workdir, target_dsn, "--json").stdout)
    assert out["status"] == "applied"
    for table in PROD_TABLES:  # production's values, exactly (test side did not touch these)
        cols = _columns(source_dsn, table)
        assert _rows(target_dsn, table, cols) == _rows(source_dsn, table, cols), table
    assert query(target_dsn, "SELECT count(*) FROM orders WHERE gift_note = 'none'") == \
        query(source_dsn, "SELECT count(*) FROM orders")
    assert query(target_dsn, "SELECT status FROM orders WHERE id = ANY(%s::uuid[])",
                 (facts["shipped"],)) == [("shipped",)] * 3
    assert query(target_dsn, "SELECT count(*) FROM order_items WHERE id = %s",
                 (facts["cancelled_item"],)) == [(0,)]
    # catalogue edits survive; stock = test value + production's change (the trigger ran once)
    prod_stock = dict(query(source_dsn, "SELECT id, stock_quantity FROM products"))
    want = {i: facts["test_stock"][i] + prod_stock[i] - facts["t0_stock"][i] for i in prod_stock}
    got = dict(query(target_dsn, "SELECT id, stock_quantity FROM products WHERE id = ANY(%s)",
                     (list(prod_stock),)))
    assert got == want and got[2] == 500 + prod_stock[2] - facts["t0_stock"][2]
    assert query(target_dsn, "SELECT title, description, price::text FROM products WHERE id = 1") == [
        ("Product 1 (new look)", "short now", "12.50")]  # TOASTed column omitted by prod: kept
    assert query(target_dsn, "SELECT title FROM products WHERE id = 2") == [("Product 2 v2",)]
    assert query(target_dsn, "SELECT count(*) FROM products WHERE title = 'Test-only'") == [(1,)]
    assert query(target_dsn, "SELECT id, code FROM coupons WHERE id IN (5, 1001, 2000) ORDER BY id"
                 ) == [(1001, "PROD-1001"), (2000, "C5")]
    assert query(target_dsn, "SELECT tgname FROM pg_trigger WHERE tgname = 'order_items_stock'") == [
        ("order_items_stock",)]
    assert query(target_dsn, "SELECT last_value >= 2000 FROM coupons_id_seq") == [(True,)]
    verify = cli(workdir, "verify", "--to", target_dsn, "--json")
    assert json.loads(verify.stdout)["ok"] is True
    again = _replay(workdir, target_dsn)
    assert "nothing to replay" in again.stdout
    assert query(target_dsn, "SELECT count(*) FROM pgcarry.replay_journal") == [(1,)]
    # tamper with one replayed row: verify fails and names table and key
    execute_sql = "UPDATE order_payments SET amount = amount + 1 WHERE order_id = %s::uuid"
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute(execute_sql, (facts["orders"][0],))
    bad = cli(workdir, "verify", "--to", target_dsn, check=False)
    assert bad.returncode == 5
    assert "public.order_payments" in bad.stdout and "amount differ" in bad.stdout


@pytest.mark.parametrize("policy,code", [(None, "TEST-1001"), ("target-wins", "TEST-1001"),
                                         ("source-wins", "PROD-1001")])
def test_serial_id_collision_policies(source_dsn, target_dsn, workdir, policy, code):
    extra = f'[replay.tables."public.coupons"]\ninsert-exists = "{policy}"\n' if policy else ""
    scenario(source_dsn, target_dsn, workdir, extra)
    with psycopg.connect(target_dsn) as c:
        before = shop.checksum(c)
    res = _replay(workdir, target_dsn, check=policy is not None)
    if policy is None:
        assert res.returncode == 4
        assert "insert-exists conflict" in res.stderr and "public.coupons" in res.stderr
        assert "key=(1001)" in res.stderr
        dry = json.loads(_replay(workdir, target_dsn, "--dry-run", "--json").stdout)
        assert [(c["table"], c["key"], c["decision"]) for c in dry["conflicts"]
                if c["kind"] == "insert-exists"] == [("public.coupons", ["1001"], "fail")]
        with psycopg.connect(target_dsn) as c:
            assert shop.checksum(c) == before
        assert query(target_dsn, "SELECT to_regclass('pgcarry.replay_journal')") == [(None,)]
    assert query(target_dsn, "SELECT code FROM coupons WHERE id = 1001") == [(code,)]


def test_forced_failure_mid_replay_leaves_target_unchanged(source_dsn, target_dsn, workdir):
    scenario(source_dsn, target_dsn, workdir,
             '[replay.tables."public.coupons"]\ninsert-exists = "target-wins"\n')
    with psycopg.connect(target_dsn, autocommit=True) as c:  # fails at the late order_payments step
        c.execute("ALTER TABLE order_payments ADD CONSTRAINT no_cards CHECK (method <> 'card') NOT VALID")
    with psycopg.connect(target_dsn) as c:
        before = shop.checksum(c)
    res = _replay(workdir, target_dsn, check=False)
    assert res.returncode == 4 and "public.order_payments" in res.stderr and "no_cards" in res.stderr
    with psycopg.connect(target_dsn) as c:
        assert shop.checksum(c) == before


def test_dropped_column_is_an_error_until_mapped(source_dsn, target_dsn, workdir):
    scenario(source_dsn, target_dsn, workdir,
             '[replay.tables."public.coupons"]\ninsert-exists = "target-wins"\n')
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("ALTER TABLE profiles DROP COLUMN phone")
    res = _replay(workdir, target_dsn, check=False)
    assert res.returncode == 4 and "no column phone" in res.stderr and "ignore-columns" in res.stderr
    with open(workdir / "pgcarry.toml", "a") as f:
        f.write('\n[replay.tables."public.profiles"]\nignore-columns = ["phone"]\n')
    _replay(workdir, target_dsn)
    cols = ["id", "email", "name", "created_at"]
    assert _rows(target_dsn, "profiles", cols) == _rows(source_dsn, "profiles", cols)


def test_shop_replay_in_txn_mode_matches_production(source_dsn, target_dsn, workdir):
    extra = '[replay.tables."public.coupons"]\ninsert-exists = "source-wins"\n'
    facts = scenario(source_dsn, target_dsn, workdir, extra)
    out = json.loads(_replay(workdir, target_dsn, "--mode", "txn", "--json").stdout)
    assert out["status"] == "applied" and out["mode"] == "txn"
    for table in PROD_TABLES:
        cols = _columns(source_dsn, table)
        assert _rows(target_dsn, table, cols) == _rows(source_dsn, table, cols), table
    prod_stock = dict(query(source_dsn, "SELECT id, stock_quantity FROM products"))
    got = dict(query(target_dsn, "SELECT id, stock_quantity FROM products WHERE id = ANY(%s)",
                     (list(prod_stock),)))
    assert got == {i: facts["test_stock"][i] + prod_stock[i] - facts["t0_stock"][i] for i in prod_stock}
    assert json.loads(cli(workdir, "verify", "--to", target_dsn, "--json").stdout)["ok"] is True
