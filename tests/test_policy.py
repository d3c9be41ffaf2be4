"""Conflict policies: resolution of defaults and the three-way column merge."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcarry.replay.policy import merge, rules_for
from pgcarry.schemas.config import ReplayConfig


def test_table_rules_override_defaults():
    cfg = ReplayConfig.model_validate({
        "insert-exists": "target-wins",
        "tables": {"public.products": {"columns": {"stock_quantity": "delta"},
                                       "update-missing": "skip"}},
    })
    r = rules_for(cfg, "public.products")
    assert r.column("stock_quantity") == "delta" and r.column("title") == "source-wins"
    assert (r.insert_exists, r.update_missing, r.delete_missing, r.truncate) == (
        "target-wins", "skip", "skip", "fail")
    assert rules_for(cfg, "public.orders").update_missing == "fail"


@pytest.mark.parametrize("policy,ours,base,new,want", [
    ("source-wins", 1, 1, 2, 2),      # only production changed it
    ("source-wins", 5, 1, 2, 2),      # both changed: production wins
    ("target-wins", 1, 1, 2, 2),      # only production changed it: no conflict, take it
    ("target-wins", 5, 1, 2, 5),      # both changed: test side wins
    ("target-wins", 2, 1, 2, 2),      # both changed to the same value
    ("delta", 100, 10, 7, 97),        # test stock 100, production sold 3
    ("delta", Decimal("1.5"), Decimal("1"), Decimal("3"), Decimal("3.5")),
    ("delta", None, 10, 7, 7),        # nothing to add to: production's value
    ("target-wins", None, None, "x", "x"),
    ("target-wins", "t", None, "x", "t"),
])
def test_merge(policy, ours, base, new, want):
    assert merge(policy, ours, base, new) == want


@given(st.integers(-1000, 1000), st.lists(st.integers(-50, 50), min_size=1, max_size=8))
def test_delta_telescopes_over_a_chain_of_updates(ours, steps):
    """Applying each update's delta in turn equals applying the net delta once (net == txn)."""
    values = [0]
    for s in steps:
        values.append(values[-1] + s)
    step_by_step = ours
    for old, new in zip(values, values[1:]):
        step_by_step = merge("delta", step_by_step, old, new)
    assert step_by_step == merge("delta", ours, values[0], values[-1]) == ours + sum(steps)


@given(st.sampled_from(["source-wins", "target-wins", "delta"]),
       st.lists(st.integers(0, 3), min_size=1, max_size=6))
def test_policies_agree_step_by_step_and_net_when_the_target_kept_t0(policy, chain):
    """Untouched by the test side, txn (event by event) and net (once) end alike."""
    values = [0, *chain]
    step = values[0]
    for old, new in zip(values, values[1:]):
        step = merge(policy, step, old, new)
    assert step == merge(policy, values[0], values[0], values[-1]) == values[-1]


def test_a_column_that_returned_to_its_t0_value_is_not_written_in_net_mode():
    """Documented difference: production went 0 -> 1 -> 0, the test side set 5. Net mode sees no
    change and keeps 5; event by event the second update would write 0."""
    step = 5
    for old, new in [(0, 1), (1, 0)]:
        step = merge("source-wins", step, old, new)
    assert step == 0  # txn mode
    # net mode does not touch the column at all: fold leaves it out of `changed`
