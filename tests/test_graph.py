"""Foreign-key ordering, without a database."""

from __future__ import annotations

import pytest

from pgcarry.errors import ReplayError
from pgcarry.replay.graph import Edge, order_self, order_tables

SHOP = [
    Edge("orders", "profiles"), Edge("order_items", "orders"), Edge("order_items", "products"),
    Edge("order_items", "product_variants"), Edge("product_variants", "products"),
    Edge("products", "categories"), Edge("categories", "categories"),
    Edge("order_payments", "orders"), Edge("order_shipping", "orders"),
    Edge("user_coupons", "profiles"), Edge("user_coupons", "coupons"), Edge("user_coupons", "orders"),
]


def _before(order, a, b):
    return order.index(a) < order.index(b)


def test_parents_come_before_children_and_deletes_reverse_it():
    tables = {e.child for e in SHOP} | {e.parent for e in SHOP}
    o = order_tables(tables, SHOP)
    for e in SHOP:
        if e.child != e.parent:
            assert _before(o.tables, e.parent, e.child), e
            assert _before(o.deletes, e.child, e.parent), e
    assert o.self_referencing == ["categories"] and o.deferred_cycles == []


def test_order_is_deterministic_and_ignores_outside_tables():
    o = order_tables(["b", "a", "c"], [Edge("c", "a"), Edge("a", "zzz")])
    assert o.tables == ["a", "b", "c"]


def test_deferrable_cycle_is_kept_together():
    o = order_tables(["x", "y", "z"], [Edge("x", "y", True), Edge("y", "x", True), Edge("z", "x")])
    assert o.deferred_cycles == [["x", "y"]]
    assert o.tables[-1] == "z"


def test_non_deferrable_cycle_names_tables_and_suggests_txn_mode():
    with pytest.raises(ReplayError) as e:
        order_tables(["x", "y"], [Edge("x", "y", False), Edge("y", "x", True)])
    text = str(e.value)
    assert "x -> y" in text and "tables=x,y" in text and "--mode txn" in text


def test_order_self_puts_parents_first():
    rows = [(4, 3), (3, 1), (2, None), (1, None), (5, 9)]
    out = order_self(rows, lambda r: r[0], lambda r: r[1])
    pos = {r[0]: i for i, r in enumerate(out)}
    assert pos[1] < pos[3] < pos[4] and sorted(out) == sorted(rows)


def test_order_self_survives_a_cycle():
    rows = [(1, 2), (2, 1)]
    assert sorted(order_self(rows, lambda r: r[0], lambda r: r[1])) == rows
