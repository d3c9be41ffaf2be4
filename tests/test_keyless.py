"""Tables without a primary key (REPLICA IDENTITY FULL), through the CLI in both modes: each UPDATE
or DELETE changes exactly one row equal to its old image (NULL-safe, json compared as text, TOAST
kept), duplicates one per change; missing rows follow update-missing / delete-missing; TRUNCATE
follows its policy; verify checks the relation's rows image by image."""

from __future__ import annotations

import json

import pytest

from tests.helpers import cli, cli_json, execute, query, write_config

BIG = "x" * 30000  # TOASTed: wal2json leaves it out of an update's new image
T0 = f"""
CREATE TABLE events (at int, what text, payload json, big text);
INSERT INTO events VALUES (1, 'a', '{{"k": 1}}', NULL), (1, 'a', '{{"k": 1}}', NULL),
    (1, 'a', '{{"k": 1}}', NULL), (2, 'b', '{{"k": 2}}', NULL), (2, 'b', '{{"k": 2}}', NULL),
    (NULL, 'n', NULL, NULL), (4, 'big', NULL, '{BIG}'), (5, 'gone', NULL, NULL);
"""
ONE = "ctid = (SELECT ctid FROM events WHERE {} LIMIT 1)"
PRODUCTION = [
    f"UPDATE events SET what = 'A' WHERE {ONE.format('at = 1')}",
    f"DELETE FROM events WHERE {ONE.format('at = 2')}",
    "UPDATE events SET at = 9 WHERE at IS NULL",
    "UPDATE events SET what = 'BIG' WHERE at = 4",
    "INSERT INTO events (at, what) VALUES (3, 'c'), (3, 'c')",
    f"UPDATE events SET what = 'C' WHERE {ONE.format('at = 3')}",
    "DELETE FROM events WHERE what = 'c'",
    "DELETE FROM events WHERE what = 'gone'",  # the test side deleted it already
]
ROWS = "SELECT at, what, payload::text, md5(big) FROM events ORDER BY 1, 2"


def _setup(source_dsn, target_dsn, workdir, extra=""):
    execute(source_dsn, T0)
    write_config(workdir, source_dsn, extra=extra)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")


@pytest.mark.parametrize("mode", ["net", "txn"])
def test_duplicate_rows_updated_and_deleted_one_per_change(source_dsn, target_dsn, workdir, mode):
    _setup(source_dsn, target_dsn, workdir)
    execute(target_dsn, "INSERT INTO events VALUES (1, 'a', '{\"k\": 1}', NULL)",  # a 4th (1, a)
            "DELETE FROM events WHERE what = 'gone'")
    execute(source_dsn, *PRODUCTION)
    cli(workdir, "capture", "--until", "current")
    gone = [{"table": "public.events", "key": ["5", "gone", None, None], "kind": "delete-missing",
             "column": None, "decision": "skip"}]
    dry = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run", "--mode", mode)
    assert [{k: c[k] for k in gone[0]} for c in dry["conflicts"]] == gone
    assert dry["keyless"][0] | {"applied": None} == {
        "table": "public.events", "insert": 1, "update": 3, "delete": 2, "applied": None}
    out = cli_json(workdir, "replay", "--to", target_dsn, "--mode", mode)
    assert [{k: c[k] for k in gone[0]} for c in out["conflicts"]] == gone
    big = query(source_dsn, "SELECT md5(big) FROM events WHERE at = 4")[0][0]
    assert query(target_dsn, ROWS) == [
        (1, "A", '{"k": 1}', None), (1, "a", '{"k": 1}', None), (1, "a", '{"k": 1}', None),
        (1, "a", '{"k": 1}', None), (2, "b", '{"k": 2}', None), (3, "C", None, None),
        (4, "BIG", None, big), (9, "n", None, None)]
    checks = cli_json(workdir, "verify", "--to", target_dsn)
    assert checks["ok"]
    (final,) = [c for c in checks["checks"] if c["name"] == "final rows"]
    assert final["detail"] == "8 row images exact, 0 present at least as often as inserted"
    # a row the replay did not leave as it should: verify names it
    execute(target_dsn, f"DELETE FROM events WHERE {ONE.format('at = 1 AND what = $$a$$')}")
    res = cli(workdir, "verify", "--to", target_dsn, "--json", check=False)
    assert res.returncode == 5
    bad = [c["detail"] for c in json.loads(res.stdout)["checks"] if not c["ok"]]
    assert bad == ['row (1,a,"{""k"": 1}",): 2 in the target, 3 expected']


def test_missing_rows_follow_their_policies_and_truncate_applies(source_dsn, target_dsn, workdir):
    _setup(source_dsn, target_dsn, workdir)
    execute(target_dsn, "DELETE FROM events WHERE at = 2")  # both (2, b)
    execute(source_dsn, "UPDATE events SET what = 'B' WHERE at = 2",  # two updates, both missing
            "DELETE FROM events WHERE what = 'gone'")
    cli(workdir, "capture", "--until", "current")
    dry = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert sorted((c["kind"], c["decision"]) for c in dry["conflicts"]) == [
        ("update-missing", "fail"), ("update-missing", "fail")]
    res = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert res.returncode == 4 and "update-missing conflict" in res.stderr
    assert "table=public.events" in res.stderr and "key=(2, b" in res.stderr
    assert query(target_dsn, "SELECT count(*) FROM events WHERE at = 5") == [(1,)]  # unchanged

    with open(workdir / "pgcarry.toml", "a") as f:
        f.write('\n[replay.tables."public.events"]\nupdate-missing = "reinsert"\ntruncate = "apply"\n')
    cli(workdir, "replay", "--to", target_dsn)
    assert query(target_dsn, "SELECT at, what FROM events WHERE at IN (2, 5) ORDER BY 2") == [
        (2, "B"), (2, "B")]
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]

    execute(source_dsn, "TRUNCATE events", "INSERT INTO events (at, what) VALUES (7, 'z'), (7, 'z')",
            "DELETE FROM events WHERE ctid = (SELECT ctid FROM events LIMIT 1)")
    execute(target_dsn, "INSERT INTO events (at, what) VALUES (8, 'test')")
    cli(workdir, "capture", "--until", "current")
    for mode in ("txn", "net"):  # txn: a dry run; net applies
        args = ["--dry-run"] if mode == "txn" else []
        out = cli_json(workdir, "replay", "--to", target_dsn, "--mode", mode, *args)
        assert [(c["kind"], c["decision"]) for c in out["conflicts"]] == [
            ("truncate", "truncate target table")]
    assert query(target_dsn, "SELECT at, what FROM events") == [(7, "z")]
    checks = cli_json(workdir, "verify", "--to", target_dsn)
    assert checks["ok"]
    assert [c["detail"] for c in checks["checks"] if c["name"] == "final rows"] == [
        "3 row images exact, 0 present at least as often as inserted"]  # 2 of them wiped
