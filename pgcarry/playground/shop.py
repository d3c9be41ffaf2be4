"""The first user's shop schema (see the runbook in the design notes), seed data and workload.

Profiles, a self-referencing category tree, products with variants, coupons, orders with items,
shipping and payments, and a trigger on order_items that moves stock. Tests, the demo and the
benchmarks build on it; every value is a parameter and every run is deterministic per seed.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from typing import Any

import psycopg

TABLES = ["profiles", "categories", "products", "product_variants", "coupons", "orders",
          "order_items", "order_shipping", "order_payments", "user_coupons"]

SCHEMA = """
CREATE TABLE profiles (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL UNIQUE, phone text,
    name text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE categories (
    id serial PRIMARY KEY, parent_id int REFERENCES categories(id), name text NOT NULL);
CREATE TABLE products (
    id serial PRIMARY KEY, category_id int REFERENCES categories(id), title text NOT NULL,
    description text, price numeric(12,2) NOT NULL, stock_quantity int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE product_variants (
    id serial PRIMARY KEY, product_id int NOT NULL REFERENCES products(id), sku text NOT NULL UNIQUE,
    stock_quantity int NOT NULL DEFAULT 0);
CREATE TABLE coupons (
    id serial PRIMARY KEY, code text NOT NULL UNIQUE, discount numeric(5,2) NOT NULL);
CREATE TABLE orders (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL REFERENCES profiles(id),
    status text NOT NULL DEFAULT 'pending', total numeric(12,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_items (
    id bigserial PRIMARY KEY, order_id uuid NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    product_id int NOT NULL REFERENCES products(id), variant_id int REFERENCES product_variants(id),
    quantity int NOT NULL, unit_price numeric(12,2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_shipping (
    order_id uuid PRIMARY KEY REFERENCES orders(id) ON DELETE CASCADE, address text NOT NULL,
    status text NOT NULL DEFAULT 'ready', tracking_no text);
CREATE TABLE order_payments (
    id bigserial PRIMARY KEY, order_id uuid NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    amount numeric(12,2) NOT NULL, method text NOT NULL DEFAULT 'card', card_number text,
    card_holder text, paid_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE user_coupons (
    id bigserial PRIMARY KEY, user_id uuid NOT NULL REFERENCES profiles(id),
    coupon_id int NOT NULL REFERENCES coupons(id), order_id uuid REFERENCES orders(id),
    used_at timestamptz, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON order_items (order_id);
CREATE INDEX ON order_payments (order_id);
CREATE INDEX ON user_coupons (order_id);

CREATE FUNCTION order_items_stock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE products SET stock_quantity = stock_quantity - NEW.quantity WHERE id = NEW.product_id;
        UPDATE product_variants SET stock_quantity = stock_quantity - NEW.quantity
         WHERE id = NEW.variant_id;
        RETURN NEW;
    END IF;
    UPDATE products SET stock_quantity = stock_quantity + OLD.quantity WHERE id = OLD.product_id;
    UPDATE product_variants SET stock_quantity = stock_quantity + OLD.quantity
     WHERE id = OLD.variant_id;
    RETURN OLD;
END $$;
CREATE TRIGGER order_items_stock AFTER INSERT OR DELETE ON order_items
    FOR EACH ROW EXECUTE FUNCTION order_items_stock();
"""

# Replay policies the shop needs: stock is a counter both sides move.
POLICY_TOML = """
[replay.tables."public.products".columns]
stock_quantity = "delta"

[replay.tables."public.product_variants".columns]
stock_quantity = "delta"

[[verify.assert]]
name = "no negative product stock"
sql = "SELECT coalesce(bool_and(stock_quantity >= 0), true) FROM products"

[[verify.assert]]
name = "no negative variant stock"
sql = "SELECT coalesce(bool_and(stock_quantity >= 0), true) FROM product_variants"
"""


def create(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def seed(conn: psycopg.Connection, rng: random.Random, *, profiles: int = 20, products: int = 10,
         coupons: int = 5, orders: int = 20) -> None:
    """Deterministic starting data (product 1 has a TOASTed description)."""
    conn.execute("INSERT INTO categories (name) VALUES ('all')")
    conn.execute("INSERT INTO categories (parent_id, name) VALUES (1, 'clothes'), (1, 'shoes')")
    for i in range(1, products + 1):
        desc = rng.randbytes(12000).hex() if i == 1 else f"product {i}"
        conn.execute("INSERT INTO products (category_id, title, description, price, stock_quantity) "
                     "VALUES (%s, %s, %s, %s, %s)",
                     (2 + i % 2, f"Product {i}", desc, Decimal(10 * i) + Decimal("0.99"), 100))
        conn.execute("INSERT INTO product_variants (product_id, sku, stock_quantity) "
                     "VALUES (%s, %s, 50), (%s, %s, 50)", (i, f"P{i}-S", i, f"P{i}-L"))
    for i in range(1, coupons + 1):
        conn.execute("INSERT INTO coupons (code, discount) VALUES (%s, %s)", (f"C{i}", Decimal(i)))
    users = [signup(conn, rng) for _ in range(profiles)]
    for u in users[: profiles // 2]:
        conn.execute("INSERT INTO user_coupons (user_id, coupon_id) VALUES (%s, %s)",
                     (u, rng.randint(1, coupons - 1)))  # the last coupon stays unused
    for _ in range(orders):
        place_order(conn, rng, rng.choice(users))


def signup(conn: psycopg.Connection, rng: random.Random) -> str:
    uid = _uuid(rng)
    conn.execute("INSERT INTO profiles (id, email, phone, name) VALUES (%s, %s, %s, %s)",
                 (uid, f"user-{uid[:8]}@example.com", f"010-{rng.randint(1000, 9999)}-"
                  f"{rng.randint(1000, 9999)}", f"User {uid[:4]}"))
    return uid


def place_order(conn: psycopg.Connection, rng: random.Random, user_id: str,
                items: int | None = None) -> str:
    """One order with items (the trigger moves stock), shipping and a card payment."""
    oid = _uuid(rng)
    total = Decimal(0)
    with conn.transaction():
        conn.execute("INSERT INTO orders (id, user_id) VALUES (%s, %s)", (oid, user_id))
        products = conn.execute("SELECT id, price FROM products ORDER BY id").fetchall()
        for _ in range(items or rng.randint(1, 3)):
            pid, price = rng.choice(products)
            qty = rng.randint(1, 3)
            variant = conn.execute("SELECT id FROM product_variants WHERE product_id = %s ORDER BY id "
                                   "LIMIT 1", (pid,)).fetchone()
            conn.execute("INSERT INTO order_items (order_id, product_id, variant_id, quantity, "
                         "unit_price) VALUES (%s, %s, %s, %s, %s)",
                         (oid, pid, variant[0] if variant else None, qty, price))
            total += price * qty
        conn.execute("UPDATE orders SET total = %s WHERE id = %s", (total, oid))
        conn.execute("INSERT INTO order_shipping (order_id, address) VALUES (%s, %s)",
                     (oid, f"Seoul {rng.randint(1, 999)}-gil"))
        conn.execute("INSERT INTO order_payments (order_id, amount, card_number, card_holder) "
                     "VALUES (%s, %s, %s, %s)",
                     (oid, total, f"4111-{rng.randint(1000, 9999)}", f"Holder {oid[:4]}"))
    return oid


def use_coupon(conn: psycopg.Connection, user_coupon_id: int, order_id: str) -> None:
    conn.execute("UPDATE user_coupons SET used_at = now(), order_id = %s WHERE id = %s",
                 (order_id, user_coupon_id))


def set_status(conn: psycopg.Connection, order_id: str, status: str) -> None:
    conn.execute("UPDATE orders SET status = %s WHERE id = %s", (status, order_id))
    conn.execute("UPDATE order_shipping SET status = %s WHERE order_id = %s", (status, order_id))


def cancel_item(conn: psycopg.Connection, item_id: int) -> None:
    conn.execute("DELETE FROM order_items WHERE id = %s", (item_id,))


def traffic(conn: psycopg.Connection, rng: random.Random, *, signups: int = 3, orders: int = 5
            ) -> dict[str, Any]:
    """Production after T0: sign-ups, new orders (some using pre-T0 coupons), status changes of
    pre-T0 orders, a cancelled pre-T0 order item. Returns what it touched."""
    old_orders = [r[0] for r in conn.execute("SELECT id::text FROM orders ORDER BY created_at, id")]
    old_items = [r[0] for r in conn.execute("SELECT id FROM order_items ORDER BY id")]
    coupons = [r[0] for r in conn.execute(
        "SELECT id FROM user_coupons WHERE used_at IS NULL ORDER BY id")]
    users = [signup(conn, rng) for _ in range(signups)]
    new_orders = [place_order(conn, rng, rng.choice(users)) for _ in range(orders)]
    for cid, oid in zip(coupons[:2], new_orders):
        use_coupon(conn, cid, oid)
    for oid in old_orders[:3]:
        set_status(conn, oid, "shipped")
    cancel_item(conn, old_items[0])
    return {"users": users, "orders": new_orders, "shipped": old_orders[:3],
            "cancelled_item": old_items[0], "coupons_used": coupons[:2]}


def checksum(conn: psycopg.Connection, tables: list[str] | None = None) -> dict[str, str]:
    """md5 of every row of each table, in a stable order: "byte-for-byte unchanged" checks."""
    from psycopg import sql

    out = {}
    for t in tables or TABLES:
        q = sql.SQL("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x")
        out[t] = conn.execute(q.format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
    return out
