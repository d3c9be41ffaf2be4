"""Triggers during replay: replay runs as a replica, so production's triggers (their effects are in
the log) never fire twice, and triggers only the test side has do not fire either — the dry run
and the report list them. A trigger named in fire-triggers fires exactly once per replayed row
(an unknown name is refused before anything runs), and is left as it was."""

from __future__ import annotations

import json

import pytest

from tests.helpers import cli, cli_json, execute, query, write_config

SCHEMA = """
CREATE TABLE orders (id int PRIMARY KEY, total int NOT NULL DEFAULT 0, status text);
CREATE TABLE items (id int PRIMARY KEY, order_id int REFERENCES orders, price int);
CREATE FUNCTION add_price() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN UPDATE orders SET total = total + NEW.price WHERE id = NEW.order_id; RETURN NEW; END $$;
CREATE TRIGGER items_total AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION add_price();
INSERT INTO orders VALUES (1, 0, 'new'), (2, 0, 'new');
"""
TEST_SIDE = """
CREATE TABLE audit (order_id int, op text);
CREATE FUNCTION audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
CREATE TRIGGER recalc_totals AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION audit_order();
CREATE FUNCTION audit_item() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (NEW.order_id, 'item'); RETURN NEW; END $$;
CREATE TRIGGER audit_items AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION audit_item();
"""
FIRE = '[replay.tables."public.orders"]\nfire-triggers = ["recalc_totals"]\n'


def _scenario(source_dsn, target_dsn, workdir, extra=""):
    execute(source_dsn, SCHEMA)
    write_config(workdir, source_dsn, extra=extra)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(target_dsn, TEST_SIDE)
    execute(source_dsn, "INSERT INTO orders (id, status) VALUES (3, 'new'), (4, 'new')",
            "UPDATE orders SET status = 'paid' WHERE id IN (1, 3)",
            "INSERT INTO items VALUES (10, 1, 5), (11, 1, 7), (12, 4, 9)")  # items_total moves totals
    cli(workdir, "capture", "--until", "current")


def test_test_only_triggers_are_listed_and_do_not_fire(source_dsn, target_dsn, workdir):
    _scenario(source_dsn, target_dsn, workdir)
    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert plan["triggers"] == [
        {"table": "public.items", "trigger": "audit_items", "production": False, "fires": False},
        {"table": "public.orders", "trigger": "recalc_totals", "production": False, "fires": False}]
    text = cli(workdir, "replay", "--to", target_dsn).stdout
    assert ("public.orders.recalc_totals: only on the test side; does not fire; name it in "
            "fire-triggers to fire it") in text
    assert query(target_dsn, "SELECT count(*) FROM audit") == [(0,)]
    assert query(target_dsn, "SELECT id, total, status FROM orders ORDER BY id") == \
        query(source_dsn, "SELECT id, total, status FROM orders ORDER BY id")  # added once


@pytest.mark.parametrize("mode,want", [
    ("net", [(1, "UPDATE"), (3, "INSERT"), (4, "INSERT")]),  # one per replayed row
    ("txn", [(1, "UPDATE"), (1, "UPDATE"), (1, "UPDATE"), (3, "INSERT"), (3, "UPDATE"),
             (4, "INSERT"), (4, "UPDATE")]),  # one per replayed change
])
def test_a_named_trigger_fires_once_per_replayed_row(source_dsn, target_dsn, workdir, mode, want):
    _scenario(source_dsn, target_dsn, workdir, FIRE)
    out = cli_json(workdir, "replay", "--to", target_dsn, "--mode", mode)
    assert {"table": "public.orders", "trigger": "recalc_totals", "production": False,
            "fires": True} in out["triggers"]
    assert query(target_dsn, "SELECT order_id, op FROM audit ORDER BY 1, 2") == want
    assert query(target_dsn, "SELECT id, total FROM orders ORDER BY id") == \
        query(source_dsn, "SELECT id, total FROM orders ORDER BY id")  # items_total: not again
    assert query(target_dsn, "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal "
                             "ORDER BY 1") == [
        ("audit_items", "O"), ("items_total", "O"), ("recalc_totals", "O")]  # as they were
    assert json.loads(cli(workdir, "verify", "--to", target_dsn, "--json").stdout)["ok"]


def test_an_unknown_trigger_name_is_refused_before_anything_runs(source_dsn, target_dsn, workdir):
    _scenario(source_dsn, target_dsn, workdir, FIRE.replace("recalc_totals", "recalc_total"))
    for verb in (["replay", "--to", target_dsn], ["cutover", "--from", target_dsn, "--yes"]):
        res = cli(workdir, *verb, check=False)
        assert res.returncode == 2, res.stderr
        assert ("replay.tables.\"public.orders\".fire-triggers: public.orders has no trigger "
                "'recalc_total' in the target (its triggers: recalc_totals)") in res.stderr
    assert query(target_dsn, "SELECT count(*) FROM orders") == [(2,)]
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots") == [(1,)]
