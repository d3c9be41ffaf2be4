"""`pgcarry demo`: two throwaway clusters (production with wal_level=logical, test), the shop with a
few thousand rows, `start --copy-to` with masking, production traffic while the test side develops,
then `cutover` and `status`. Always removes its clusters; True only when the cutover verified.
"""

from __future__ import annotations

import random
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from pgcarry.playground import shop
from pgcarry.playground.localpg import LocalCluster

# The salt of a throwaway run; a real config reads it from the environment (README.md, [masking]).
MASKS = f"""
[masking]
salt = "{secrets.token_hex(16)}"

[[mask]]
table = "public.profiles"
column = "email"
kind = "email"

[[mask]]
table = "public.profiles"
column = "phone"
value = "010-0000-0000"

[[mask]]
table = "public.order_payments"
column = "card_number"
value = "0000-0000"

[[mask]]
table = "public.order_payments"
column = "card_holder"
value = "MASKED"
"""


def _config(folder: Path, prod: str) -> Path:
    path = folder / "pgcarry.toml"
    path.write_text(f'[source]\ndsn = "{prod}"\nslot = "pgcarry_demo"\n\n[capture]\n'
                    f'tables = ["public.*"]\n\n[log]\npath = "pgcarry-log.db"\n'
                    f'{shop.POLICY_TOML}{MASKS}')
    return path


def _traffic(dsn: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Production keeps selling until the fence cuts it off."""
    rng = random.Random(7)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            users = [r[0] for r in c.execute("SELECT id::text FROM profiles ORDER BY id LIMIT 50")]
            olds = [r[0] for r in c.execute("SELECT id::text FROM orders ORDER BY id LIMIT 40")]
            items = [r[0] for r in c.execute("SELECT id FROM order_items ORDER BY id LIMIT 10")]
            coupons = [r[0] for r in c.execute("SELECT id FROM user_coupons WHERE used_at IS NULL")]
            shop.traffic(c, rng, signups=5, orders=10)
            while not stop.is_set():
                if rng.random() < 0.2:
                    users.append(shop.signup(c, rng))
                oid = shop.place_order(c, rng, rng.choice(users))
                if coupons and rng.random() < 0.3:
                    shop.use_coupon(c, coupons.pop(), oid)
                if olds and rng.random() < 0.3:
                    shop.set_status(c, olds.pop(), "shipped")
                if items and rng.random() < 0.1:
                    shop.cancel_item(c, items.pop())
                counts["orders"] = counts.get("orders", 0) + 1
                time.sleep(0.02)
    except psycopg.Error as e:  # the fence ends production's sessions: expected
        counts["stopped_by"] = type(e).__name__


def _develop(dsn: str) -> None:
    """The test side: catalogue edits and a new column."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE products SET title = title || ' (2026 edition)', price = price + 1 "
                  "WHERE id <= 10")
        c.execute("INSERT INTO categories (name, parent_id) VALUES ('outlet', 1)")
        c.execute("ALTER TABLE products ADD COLUMN badge text NOT NULL DEFAULT 'none'")
        c.execute("UPDATE products SET badge = 'new' WHERE id % 5 = 0")


def run_demo(say=print) -> bool:  # type: ignore[no-untyped-def]
    from pgcarry.cli.main import main

    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="pgcarry-demo-"))
    prod_c, test_c = LocalCluster("demo-prod"), LocalCluster("demo-test", {"wal_level": "replica"})
    try:
        say("demo: starting two local PostgreSQL clusters (production, test)")
        prod_c.start()
        test_c.start()
        prod, test = prod_c.createdb("shop"), test_c.createdb("shop")
        with psycopg.connect(prod, autocommit=True) as c:
            shop.create(c)
            shop.seed(c, random.Random(1), profiles=400, products=80, coupons=10, orders=500)
            c.execute("UPDATE products SET stock_quantity = 1000")  # a well-stocked warehouse
            c.execute("UPDATE product_variants SET stock_quantity = 500")
            (rows,) = c.execute("SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM "
                                "order_items) + (SELECT count(*) FROM profiles) + (SELECT count(*) "
                                "FROM order_payments) + (SELECT count(*) FROM order_shipping)"
                                ).fetchone()  # type: ignore[misc]
        say(f"demo: production shop loaded ({rows} rows)")
        cfg = str(_config(folder, prod))
        if main(["start", "--config", cfg, "--copy-to", test, "--set-replica-identity"]) != 0:
            return False
        stop, counts = threading.Event(), {}
        worker = threading.Thread(target=_traffic, args=(prod, stop, counts), daemon=True)
        worker.start()
        _develop(test)
        time.sleep(3)
        say("demo: production traffic running, test side developed; cutting over")
        code = main(["cutover", "--config", cfg, "--from", test, "--yes"])
        stop.set()
        worker.join(10)
        say(f"demo: production placed {counts.get('orders', 0)} orders during the run "
            f"(traffic ended by the fence: {counts.get('stopped_by', 'no')})")
        main(["status", "--config", cfg, "--offline"])
        say(f"demo: {'PASSED' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
        return code == 0
    finally:
        prod_c.destroy()
        test_c.destroy()
        shutil.rmtree(folder, ignore_errors=True)
