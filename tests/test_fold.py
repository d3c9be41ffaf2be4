"""Net-effect folding of captured events, without a database: every rule holds both for the
reference fold (Change objects; mode `txn` and verify) and for mode `net`'s reader (raw rows)."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgcarry.errors import ReplayError
from pgcarry.replay import reader
from pgcarry.replay.fold import fold
from pgcarry.replay.fold import fold as reference_fold
from pgcarry.schemas.change import Change
from tests.test_replay_modes import ops, production, txn_sizes
from tests.walgen import Wal

T = "public.t"


def _read(changes):
    rows = [(0, ch.lsn.value, ch.action, ch.schema, ch.table, ch.raw) for ch in changes]
    return reader.read(iter(rows), {}, lambda _m: None)


@pytest.fixture(autouse=True, params=["Folder", "reader"])
def _implementation(request, monkeypatch):
    """Run each test with `fold` meaning the reference fold, then the raw reader."""
    if request.param == "reader":
        monkeypatch.setattr(sys.modules[__name__], "fold", _read)


def _one(changes):
    tables = fold(changes)
    return tables[T]


def test_insert_then_updates_is_one_insert_of_the_final_image():
    w = Wal()
    t = _one([
        w.ins(T, id=1, a="x", n=5),
        w.upd(T, {"id": 1, "a": "x", "n": 5}, {"id": 1, "a": "y", "n": 5}),
        w.upd(T, {"id": 1, "a": "y", "n": 5}, {"id": 1, "a": "y", "n": 7}),
    ])
    (r,) = t.rows.values()
    assert (r.op, r.new, r.events) == ("I", {"id": 1, "a": "y", "n": 7}, 3)
    assert t.captured == {"I": 1, "U": 2}


def test_insert_then_delete_vanishes():
    w = Wal()
    t = _one([w.ins(T, id=1, a="x"), w.dele(T, id=1, a="x")])
    assert t.rows == {} and t.vanished == 1


def test_updates_keep_base_and_only_net_changed_columns():
    w = Wal()
    t = _one([
        w.upd(T, {"id": 1, "a": "x", "n": 5, "s": "p"}, {"id": 1, "a": "x", "n": 4, "s": "q"}),
        w.upd(T, {"id": 1, "a": "x", "n": 4, "s": "q"}, {"id": 1, "a": "x", "n": 3, "s": "p"}),
    ])
    r = t.rows[(1,)]
    assert r.op == "U"
    assert r.base == {"id": 1, "a": "x", "n": 5, "s": "p"}
    assert r.new == {"id": 1, "a": "x", "n": 3, "s": "p"}
    assert r.changed == {"n"}  # s went p -> q -> p: no net change


def test_update_that_omits_a_toast_column_does_not_change_it():
    w = Wal()
    t = _one([w.upd(T, {"id": 1, "big": "long text", "n": 5}, {"id": 1, "n": 4})])
    r = t.rows[(1,)]
    assert r.changed == {"n"}
    assert r.new == {"id": 1, "big": "long text", "n": 4}


def test_default_identity_counts_every_present_column_as_changed():
    w = Wal()
    t = _one([w.upd(T, {"id": 1}, {"id": 1, "a": "x", "n": 5})])
    assert t.rows[(1,)].changed == {"a", "n"}
    assert t.partial_old


def test_update_then_delete_is_a_delete_with_the_original_base():
    w = Wal()
    t = _one([
        w.upd(T, {"id": 1, "n": 5}, {"id": 1, "n": 4}),
        w.dele(T, id=1, n=4),
    ])
    r = t.rows[(1,)]
    assert (r.op, r.base, r.new) == ("D", {"id": 1, "n": 5}, {})


def test_delete_then_insert_is_an_update_against_the_t0_row():
    w = Wal()
    t = _one([w.dele(T, id=1, n=5, a="x"), w.ins(T, id=1, n=9, a="x")])
    r = t.rows[(1,)]
    assert (r.op, r.base, r.new, r.changed) == ("U", {"id": 1, "n": 5, "a": "x"},
                                                 {"id": 1, "n": 9, "a": "x"}, {"n"})


def test_primary_key_change_is_delete_old_plus_insert_new():
    w = Wal()
    t = _one([w.upd(T, {"id": 1, "big": "b", "n": 5}, {"id": 2, "n": 5})])
    assert t.rows[(1,)].op == "D"
    ins = t.rows[(2,)]
    assert (ins.op, ins.new) == ("I", {"id": 2, "big": "b", "n": 5})


def test_primary_key_change_of_a_row_inserted_in_the_window():
    w = Wal()
    t = _one([w.ins(T, id=1, n=5), w.upd(T, {"id": 1, "n": 5}, {"id": 3, "n": 6})])
    assert list(t.rows) == [(3,)]
    assert t.rows[(3,)].op == "I" and t.rows[(3,)].new == {"id": 3, "n": 6}


def test_truncate_discards_earlier_effects():
    w = Wal()
    t = _one([w.ins(T, id=1, n=1), w.upd(T, {"id": 7, "n": 1}, {"id": 7, "n": 2}),
              w.trunc(T), w.ins(T, id=2, n=2)])
    assert list(t.rows) == [(2,)] and t.truncated_at is not None
    assert t.captured == {"I": 2, "U": 1, "T": 1}


def test_composite_keys_and_counts():
    w = Wal(pk={T: ["a", "b"]})
    t = _one([w.ins(T, a=1, b="x", v=1), w.ins(T, a=1, b="y", v=1),
              w.upd(T, {"a": 1, "b": "z", "v": 1}, {"a": 1, "b": "z", "v": 1})])
    assert set(t.rows) == {(1, "x"), (1, "y"), (1, "z")}
    assert (t.count("I"), t.count("U"), t.noop_updates) == (2, 0, 1)


def test_inconsistent_streams_are_errors_with_context():
    w = Wal()
    with pytest.raises(ReplayError) as e:
        fold([w.ins(T, id=1), w.ins(T, id=1)])
    assert "table=public.t" in str(e.value) and "key=(1,)" in str(e.value)


def test_numeric_key_parts_compare_as_numbers():
    """1.5 -> 1.50 is no key change (the reader sees the texts, Change sees Decimals)."""
    w = Wal(types={T: {"id": "numeric", "n": "integer"}})
    ch = w.upd(T, {"id": 1.5, "n": 1}, {"id": 1.5, "n": 2})
    raw = ch.raw.replace('"value": 1.5', '"value": 1.50', 1)
    assert raw.index('"value": 1.50') < raw.index('"identity"')
    t = _one([Change(ch.seq, ch.lsn, ch.action, ch.schema, ch.table, raw)])
    (r,) = t.rows.values()
    assert (r.op, r.changed, str(r.new["n"])) == ("U", {"n"}, "2")


def test_reader_keeps_numbers_exact_and_learns_types_of_new_columns():
    w = Wal(types={T: {"id": "bigint", "p": "numeric(30,10)", "late": "text"}})
    big = 2**70
    raw = w.ins(T, id=1, p=7).raw.replace("\"value\": 7}", "\"value\": 12345678901234567890.1234567890}")
    ch = w.ins(T, id=big, p=2)
    late = w.upd(T, {"id": big, "p": 2}, {"id": big, "p": 2, "late": "x"})
    rows = [(0, 1, "I", "public", "t", raw), (0, 2, "I", "public", "t", ch.raw),
            (0, 3, "U", "public", "t", late.raw)]
    t = reader.read(iter(rows), {}, lambda _m: None)[T]
    assert t.rows[(1,)].new == {"id": 1, "p": "12345678901234567890.1234567890"}
    assert t.rows[(big,)].new == {"id": big, "p": 2, "late": "x"}
    assert t.columns == {"id": "bigint", "p": "numeric(30,10)", "late": "text"}


def test_reader_keeps_a_keyless_relations_inserts_in_order():
    w = Wal(pk={T: []})
    rows = [(0, ch.lsn.value, ch.action, ch.schema, ch.table, ch.raw)
            for ch in (w.ins(T, a=1), w.ins(T, a=1), w.ins(T, a=2))]
    t = reader.read(iter(rows), {}, lambda _m: None)[T]
    assert (t.pk, t.rows, t.plain) == ([], {}, [{"a": 1}, {"a": 1}, {"a": 2}])
    assert t.captured == {"I": 3}


def test_a_keyless_relation_folds_as_a_multiset():
    """Updates and deletes take one equal row inserted in the window (duplicates one per change);
    the rest stay as operations on the target's rows, in commit order, with full new images."""
    w = Wal(pk={T: []})
    t = fold([w.ins(T, a=1, b="x"), w.ins(T, a=1, b="x"), w.ins(T, a=2, b="y"),
              w.upd(T, {"a": 1, "b": "x"}, {"a": 1, "b": "z"}),  # one of the two inserted (1, x)
              w.dele(T, a=2, b="y"),  # the inserted (2, y): vanishes
              w.upd(T, {"a": 7, "b": "t0"}, {"a": 8}),  # a T0 row; b unchanged (TOAST) is kept
              w.upd(T, {"a": 8, "b": "t0"}, {"a": 9, "b": "t0"}),  # the same row again
              w.dele(T, a=1, b="t0"), w.upd(T, {"a": 5, "b": "n"}, {"a": 5, "b": "n"})])[T]
    assert sorted(map(str, t.inserts())) == sorted(map(str, [{"a": 1, "b": "x"}, {"a": 1, "b": "z"}]))
    assert [(o.op, o.old, o.new) for o in t.ops] == [
        ("U", {"a": 7, "b": "t0"}, {"a": 8, "b": "t0"}), ("U", {"a": 8, "b": "t0"}, {"a": 9, "b": "t0"}),
        ("D", {"a": 1, "b": "t0"}, {})]
    assert (t.vanished, t.noop) == (1, 1)
    assert t.tally() == {"I": 2, "U": 2, "D": 1, "noop": 1}
    assert t.captured == {"I": 3, "U": 4, "D": 2}
    w2 = fold([w.ins(T, a=1, b="x"), w.upd(T, {"a": 3, "b": "q"}, {"a": 4, "b": "q"}), w.trunc(T),
               w.ins(T, a=2, b="y")])[T]
    assert (w2.inserts(), w2.ops) == ([{"a": 2, "b": "y"}], [])


keyless_script = st.lists(st.tuples(st.sampled_from("iud"), st.integers(0, 3), st.integers(0, 50)),
                          max_size=30)


@settings(max_examples=150, deadline=None)
@given(keyless_script)
def test_keyless_fold_then_ops_then_inserts_is_commit_order(script):
    """Applying the fold's operations to the T0 rows, then its inserts, gives the multiset that
    applying every change in commit order gives (which equal row a change takes never matters)."""
    w = Wal(pk={T: []})
    t0 = [{"v": 1}, {"v": 1}, {"v": 2}]
    rows, changes = [dict(r) for r in t0], []
    for op, v, pick in script:
        if op == "i":
            rows.append({"v": v})
            changes.append(w.ins(T, v=v))
        elif rows:
            old = rows.pop(pick % len(rows))
            if op == "u":
                rows.append({"v": v})
                changes.append(w.upd(T, old, {"v": v}))
            else:
                changes.append(w.dele(T, **old))
    if not changes:
        return
    f = fold(changes)[T]
    got = Counter(r["v"] for r in t0)
    for o in f.ops:
        assert got[o.old["v"]] > 0  # production's row is there: nothing goes missing
        got[o.old["v"]] -= 1
        if o.op == "U":
            got[o.new["v"]] += 1
    got.update(r["v"] for r in f.inserts())
    assert +got == Counter(r["v"] for r in rows)


@settings(max_examples=150, deadline=None)
@given(ops, txn_sizes)
def test_reader_and_reference_fold_agree_on_random_streams(script, sizes):
    _, _, txns = production(script, sizes)
    changes = [ch for t in txns for ch in t.changes]
    ref, got = reference_fold(changes), _read(changes)
    assert set(ref) == set(got)
    for rel, t in ref.items():
        g = got[rel]
        assert (g.captured, g.vanished, g.partial_old, g.tally()) == (
            t.captured, t.vanished, t.partial_old, t.tally())
        assert {k: (r.op, r.new, r.base, r.changed, r.last_lsn) for k, r in g.rows.items()} == {
            k: (r.op, r.new, r.base, r.changed, r.last_lsn) for k, r in t.rows.items()}
