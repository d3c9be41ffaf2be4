"""Net-mode replay onto a real target from a synthetic log: data, journal, policies, rollback."""

from __future__ import annotations

import psycopg
import pytest

from pgcarry.errors import ConflictError, ReplayError
from pgcarry.replay import replay
from pgcarry.replay.report import render
from pgcarry.schemas.config import Config
from tests.walgen import Wal, write_log

DDL = """
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, n int NOT NULL DEFAULT 0,
                     big text, extra text DEFAULT 'dflt');
CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent, v text);
INSERT INTO parent VALUES (1, 'one', 10, 'big-1'), (2, 'two', 20, 'big-2'), (3, 'three', 30, NULL);
INSERT INTO child (parent_id, v) VALUES (1, 'a'), (2, 'b');
"""
P, C = "public.parent", "public.child"


def cfg(workdir, **replay):
    return Config.model_validate({"source": {"dsn": "host=x", "slot": "s1"},
                                  "log": {"path": str(workdir / "log.db")}, "replay": replay})


def rows(dsn, q):
    with psycopg.connect(dsn) as c:
        return c.execute(q).fetchall()


@pytest.fixture
def target(target_dsn):
    with psycopg.connect(target_dsn) as c:
        c.execute(DDL)
    return target_dsn


def _traffic(w):
    return [
        w.txn(w.ins(P, id=4, name="four", n=40, big="b4", extra="e"),
              w.ins(C, id=10, parent_id=4, v="x")),
        w.txn(w.upd(P, {"id": 1, "name": "one", "n": 10, "big": "big-1", "extra": "dflt"},
                    {"id": 1, "name": "one", "n": 9, "extra": "dflt"})),  # big omitted (TOAST)
        w.txn(w.upd(C, {"id": 10, "parent_id": 4, "v": "x"}, {"id": 10, "parent_id": 4, "v": "y"}),
              w.dele(C, id=2, parent_id=2, v="b")),
        w.txn(w.ins(C, id=11, parent_id=3, v="gone"), w.dele(C, id=11, parent_id=3, v="gone")),
    ]


def test_net_replay_applies_net_effects_and_journals(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", _traffic(w))
    with psycopg.connect(target) as c:  # the test side edits another column of parent 1
        c.execute("UPDATE parent SET name = 'ONE (test)' WHERE id = 1")
    rep = replay(cfg(workdir), log, target)
    assert rep.status == "applied"
    assert rows(target, "SELECT * FROM parent ORDER BY id") == [
        (1, "ONE (test)", 9, "big-1", "dflt"), (2, "two", 20, "big-2", "dflt"),
        (3, "three", 30, None, "dflt"), (4, "four", 40, "b4", "e")]
    assert rows(target, "SELECT * FROM child ORDER BY id") == [(1, 1, "a"), (10, 4, "y")]
    assert rows(target, "SELECT last_value FROM child_id_seq") == [(10,)]
    (j,) = rows(target, "SELECT slot, transactions, changes, counts->'public.child'->'net' "
                        "FROM pgcarry.replay_journal")
    assert j == ("s1", 4, 7, {"insert": 1, "update": 0, "delete": 1, "noop": 0, "vanished": 1})
    again = replay(cfg(workdir), log, target)
    assert again.status == "nothing"
    assert rows(target, "SELECT count(*) FROM pgcarry.replay_journal") == [(1,)]
    # pre-replay images of the touched rows are kept
    assert rows(target, "SELECT id, name, n FROM pgcarry.before_public__parent ORDER BY id") == [
        (1, "ONE (test)", 10)]


def test_insert_exists_fail_lists_conflict_and_changes_nothing(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.ins(P, id=2, name="prod-two", n=1, big=None))])
    with pytest.raises(ConflictError) as e:
        replay(cfg(workdir), log, target)
    assert "insert-exists" in str(e.value) and "key=(2)" in str(e.value)
    assert rows(target, "SELECT name FROM parent WHERE id = 2") == [("two",)]
    assert rows(target, "SELECT to_regclass('pgcarry.replay_journal')") == [(None,)]
    rep = replay(cfg(workdir, **{"insert-exists": "source-wins"}), log, target)
    assert [c.decision for c in rep.plan.conflicts] == ["overwrite"]
    assert rows(target, "SELECT name, n, extra FROM parent WHERE id = 2") == [("prod-two", 1, "dflt")]


def test_inserts_copied_into_the_target_fall_back_to_staging_when_the_copy_fails(target, workdir):
    """Net inserts go straight into the target by COPY; when that fails (here a unique index
    other than the key), it is undone, the inserts are staged and the error is reported from
    there, and the target is unchanged. Without the clash the same log applies, and an insert
    that did not send a column gets the target's default."""
    with psycopg.connect(target) as c:
        c.execute("CREATE UNIQUE INDEX parent_name ON parent (name)")
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(
        w.dele(P, id=3, name="three", n=30, big=None, extra="dflt"),
        w.ins(P, id=5, name="five", n=5, big=None, extra="e"),
        w.ins(C, id=30, parent_id=5, v="c"),
        w.ins(P, id=6, name="two", n=6, big=None))])  # "two" is parent 2's name; no extra
    with pytest.raises(ReplayError) as e:  # the delete that already ran is no delete-missing
        replay(cfg(workdir, **{"delete-missing": "fail"}), log, target)
    assert "insert failed" in str(e.value) and "parent_name" in str(e.value)
    assert rows(target, "SELECT id FROM parent ORDER BY id") == [(1,), (2,), (3,)]
    assert rows(target, "SELECT count(*) FROM child") == [(2,)]
    assert rows(target, "SELECT to_regclass('pgcarry.replay_journal')") == [(None,)]
    with psycopg.connect(target) as c:
        c.execute("DROP INDEX parent_name")
    rep = replay(cfg(workdir, **{"delete-missing": "fail"}), log, target)
    assert rep.applied[P] == {"insert": 2, "update": 0, "delete": 1, "reinsert": 0}
    assert rep.applied[C]["insert"] == 1 and rep.plan.conflicts == []
    assert rows(target, "SELECT id, name, n, extra FROM parent WHERE id > 2 ORDER BY id") == [
        (5, "five", 5, "e"), (6, "two", 6, "dflt")]
    assert rows(target, "SELECT id, parent_id, v FROM child WHERE id = 30") == [(30, 5, "c")]


def test_insert_exists_is_found_when_the_target_key_is_deferrable(target, workdir):
    """A deferrable key would let a COPY of an existing key pass until COMMIT: such a table's
    inserts are staged and checked first, so the conflict is listed with its key."""
    with psycopg.connect(target) as c:
        c.execute("CREATE TABLE dpk (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);"
                  "INSERT INTO dpk VALUES (1, 'test')")
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.ins("public.dpk", id=1, v="prod"),
                                               w.ins("public.dpk", id=2, v="new"))])
    with pytest.raises(ConflictError) as e:
        replay(cfg(workdir), log, target)
    assert "insert-exists" in str(e.value) and "key=(1)" in str(e.value)
    assert rows(target, "SELECT * FROM dpk") == [(1, "test")]


def test_insert_exists_target_wins_keeps_the_target_row(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.ins(P, id=2, name="prod-two", n=1, big=None))])
    replay(cfg(workdir, **{"insert-exists": "target-wins"}), log, target)
    assert rows(target, "SELECT name, n FROM parent WHERE id = 2") == [("two", 20)]


def test_delta_and_target_wins_columns(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.upd(
        P, {"id": 1, "name": "one", "n": 10, "big": "big-1", "extra": "dflt"},
        {"id": 1, "name": "prod", "n": 7, "big": "big-1", "extra": "dflt"}))])
    with psycopg.connect(target) as c:
        c.execute("UPDATE parent SET n = 100, name = 'test' WHERE id = 1")
    policy = {"tables": {P: {"columns": {"n": "delta", "name": "target-wins"}}}}
    rep = replay(cfg(workdir, **policy), log, target)
    assert rows(target, "SELECT name, n FROM parent WHERE id = 1") == [("test", 97)]
    assert sorted((c.column, c.decision) for c in rep.plan.conflicts) == [
        ("n", "delta"), ("name", "target-wins")]


def test_orphan_found_by_anti_join_rolls_back(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.ins(C, id=20, parent_id=3, v="z"))])
    with psycopg.connect(target) as c:  # the test side deleted the parent
        c.execute("DELETE FROM parent WHERE id = 3")
    with pytest.raises(ReplayError) as e:
        replay(cfg(workdir), log, target)
    assert "child_parent_id_fkey" in str(e.value) and "(3,)" in str(e.value)
    assert rows(target, "SELECT count(*) FROM child") == [(2,)]


def test_missing_column_is_drift_until_mapped(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.ins(C, id=30, parent_id=1, v="q", legacy="L"))])
    with pytest.raises(ReplayError) as e:
        replay(cfg(workdir), log, target)
    assert "no column legacy" in str(e.value) and "ignore-columns" in str(e.value)
    dry = replay(cfg(workdir), log, target, dry_run=True)
    assert [d.kind for d in dry.plan.drift if d.blocking] == ["missing-column"]
    replay(cfg(workdir, tables={C: {"ignore-columns": ["legacy"]}}), log, target)
    assert rows(target, "SELECT * FROM child WHERE id = 30") == [(30, 1, "q")]


def test_truncate_fails_by_default_and_applies_when_asked(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.trunc(C)), w.txn(w.ins(C, id=5, parent_id=1, v="n"))])
    with pytest.raises(ConflictError) as e:
        replay(cfg(workdir), log, target)
    assert "truncate" in str(e.value) and "public.child" in str(e.value)
    replay(cfg(workdir, truncate="apply"), log, target)
    assert rows(target, "SELECT * FROM child") == [(5, 1, "n")]


def test_a_relation_seen_only_through_a_truncate(target, workdir):
    w = Wal()
    log = write_log(workdir / "log.db", [w.txn(w.trunc(C))])
    with pytest.raises(ConflictError) as e:
        replay(cfg(workdir), log, target)
    assert "truncate" in str(e.value) and "public.child" in str(e.value)
    rep = replay(cfg(workdir, truncate="apply"), log, target)
    assert rep.applied[C]["truncate"] == 1
    assert rows(target, "SELECT count(*) FROM child") == [(0,)]


def test_bytea_arrives_as_bare_hex_and_is_written_as_bytes(target, workdir):
    """wal2json sends bytea without its \\x: inserts COPYed into the target, staged updates and a
    keyless relation's inserts all write the bytes."""
    with psycopg.connect(target) as c:
        c.execute("CREATE TABLE blobs (id int PRIMARY KEY, b bytea); "
                  "INSERT INTO blobs VALUES (1, '\\x01'); CREATE TABLE blob_log (b bytea, note text)")
    w = Wal(types={"public.blobs": {"id": "integer", "b": "bytea"},
                   "public.blob_log": {"b": "bytea", "note": "text"}}, pk={"public.blob_log": []})
    log = write_log(workdir / "log.db", [w.txn(
        w.ins("public.blobs", id=2, b="00ff10"),
        w.upd("public.blobs", {"id": 1, "b": "01"}, {"id": 1, "b": "beef"}),
        w.ins("public.blob_log", b="cafe", note="n"))])
    rep = replay(cfg(workdir), log, target)
    assert rep.applied["public.blob_log"] == {"insert": 1, "update": 0, "delete": 0, "reinsert": 0}
    assert rows(target, "SELECT id, b FROM blobs ORDER BY id") == [(1, b"\xbe\xef"), (2, b"\x00\xff\x10")]
    assert rows(target, "SELECT b, note FROM blob_log") == [(b"\xca\xfe", "n")]


def test_dry_run_lists_a_relation_without_a_key(target, workdir, capsys):
    with psycopg.connect(target) as c:
        c.execute("CREATE TABLE events (at int, what text)")
    w = Wal(types={"public.events": {"at": "integer", "what": "text"}}, pk={"public.events": []})
    log = write_log(workdir / "log.db", [w.txn(w.ins("public.events", at=1, what="a"),
                                               w.ins("public.events", at=1, what="a"))])
    rep = replay(cfg(workdir), log, target, dry_run=True)
    assert rep.as_dict()["keyless"] == [{"table": "public.events", "insert": 2, "update": 0,
                                         "delete": 0, "applied": None}]
    render(rep, lambda head, rows: None)
    assert ("note: public.events: no primary key: inserts replayed as they came\n"
            in capsys.readouterr().out)
    assert rows(target, "SELECT count(*) FROM events") == [(0,)]
    rep = replay(cfg(workdir), log, target)
    assert rep.as_dict()["keyless"] == [{"table": "public.events", "insert": 2, "update": 0,
                                         "delete": 0, "applied": {"insert": 2, "update": 0,
                                                                  "delete": 0, "reinsert": 0}}]
    assert rows(target, "SELECT * FROM events") == [(1, "a"), (1, "a")]
