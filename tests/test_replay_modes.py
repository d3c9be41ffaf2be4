"""Modes `net` and `txn` end in the same state on the same log, and that state is production's
(a property test over random insert/update/delete sequences on a small FK schema)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcarry.replay import replay
from pgcarry.schemas.config import Config
from tests.walgen import Wal, write_log

P, C = "public.parent", "public.child"
DDL = """
DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
CREATE TABLE {s}.parent (id int PRIMARY KEY, name text NOT NULL, n int NOT NULL);
CREATE TABLE {s}.child (id int PRIMARY KEY, parent_id int REFERENCES {s}.parent, v text);
INSERT INTO {s}.parent VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30);
INSERT INTO {s}.child VALUES (1, 1, 'x'), (2, 2, 'y'), (3, NULL, 'z');
INSERT INTO {s}.parent VALUES (50, 'test only', 0);
UPDATE {s}.parent SET n = n + 1000 WHERE id = 1;  -- the test side restocks: delta keeps it
"""
T0 = ({1: {"id": 1, "name": "a", "n": 10}, 2: {"id": 2, "name": "b", "n": 20},
       3: {"id": 3, "name": "c", "n": 30}},
      {1: {"id": 1, "parent_id": 1, "v": "x"}, 2: {"id": 2, "parent_id": 2, "v": "y"},
       3: {"id": 3, "parent_id": None, "v": "z"}})

ops = st.lists(st.tuples(st.sampled_from(["ip", "up", "uk", "dp", "ic", "uc", "dc"]),
                         st.integers(0, 30), st.integers(0, 30)), max_size=25)
txn_sizes = st.lists(st.integers(1, 4), min_size=25, max_size=25)


def production(script, sizes):
    """Run `script` on a model of production; return its final state and the captured txns."""
    parents, children = {k: dict(v) for k, v in T0[0].items()}, {k: dict(v) for k, v in T0[1].items()}
    w, changes, next_id = Wal(), [], 100
    for op, a, b in script:
        pk, ck = sorted(parents), sorted(children)
        if op == "ip":
            next_id += 1
            parents[next_id] = row = {"id": next_id, "name": f"p{a}", "n": b}
            changes.append(w.ins(P, **row))
        elif op in ("up", "uk") and pk:
            old = parents[pk[a % len(pk)]]
            new = {**old, "name": f"u{b}", "n": old["n"] - b % 3}
            if op == "uk" and not any(c["parent_id"] == old["id"] for c in children.values()):
                next_id += 1
                new["id"] = next_id
            del parents[old["id"]]
            parents[new["id"]] = new
            changes.append(w.upd(P, old, new))
        elif op == "dp" and pk:
            old = parents[pk[a % len(pk)]]
            if not any(c["parent_id"] == old["id"] for c in children.values()):
                del parents[old["id"]]
                changes.append(w.dele(P, **old))
        elif op == "ic" and pk:
            next_id += 1
            children[next_id] = row = {"id": next_id, "parent_id": pk[b % len(pk)], "v": f"c{a}"}
            changes.append(w.ins(C, **row))
        elif op == "uc" and ck:
            old = children[ck[a % len(ck)]]
            new = {**old, "v": f"w{b}", "parent_id": pk[b % len(pk)] if pk and b % 2 else old["parent_id"]}
            children[old["id"]] = new
            changes.append(w.upd(C, old, new))
        elif op == "dc" and ck:
            old = children.pop(ck[a % len(ck)])
            changes.append(w.dele(C, **old))
    txns, i = [], 0
    for size in sizes:
        if i >= len(changes):
            break
        txns.append(w.txn(*changes[i:i + size]))
        i += size
    return parents, children, txns


def _cfg(path, schema):
    return Config.model_validate({
        "source": {"dsn": "host=x", "slot": schema}, "log": {"path": str(path)},
        "replay": {"tables": {P: {"rename-to": f"{schema}.parent", "columns": {"n": "delta"}},
                              C: {"rename-to": f"{schema}.child"}}}})


def _state(conn, schema):
    parents = conn.execute(f"SELECT id, name, n FROM {schema}.parent WHERE id <> 50 ORDER BY id").fetchall()
    children = conn.execute(f"SELECT id, parent_id, v FROM {schema}.child ORDER BY id").fetchall()
    return parents, children


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops, sizes=txn_sizes)
def test_net_and_txn_modes_reach_production_state(target_dsn, script, sizes):
    parents, children, txns = production(script, sizes)
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(target_dsn, autocommit=True) as conn:
        log = write_log(Path(tmp) / "log.db", txns)
        for schema, mode in (("netm", "net"), ("txnm", "txn")):
            conn.execute("DROP SCHEMA IF EXISTS pgcarry CASCADE" if schema == "netm" else "SELECT 1")
            conn.execute(DDL.format(s=schema))
            replay(_cfg(Path(tmp) / "log.db", schema), log, target_dsn, mode=mode)
        want = ([(p["id"], p["name"], p["n"] + (1000 if p["id"] == 1 else 0))
                 for _, p in sorted(parents.items())],
                [(c["id"], c["parent_id"], c["v"]) for _, c in sorted(children.items())])
        assert _state(conn, "netm") == want
        assert _state(conn, "txnm") == want
        log.close()
