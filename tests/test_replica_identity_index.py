"""REPLICA IDENTITY USING INDEX (a unique index on NOT NULL columns): wal2json names no primary
key then, and the old image holds only the index's columns. The manifest records the index's
columns and replay uses them as the key — for a table without a primary key, and for one whose
primary key is not its replica identity."""

from __future__ import annotations

import pytest

from pgcarry.changelog.sqlite import SQLiteLog
from tests.helpers import cli, cli_json, execute, query, write_config

SCHEMA = """
CREATE TABLE members (tenant int NOT NULL, email text NOT NULL, name text, visits int,
                      UNIQUE (tenant, email));
ALTER TABLE members REPLICA IDENTITY USING INDEX members_tenant_email_key;
CREATE TABLE badges (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);
ALTER TABLE badges REPLICA IDENTITY USING INDEX badges_code_key;
INSERT INTO members VALUES (1, 'a@x', 'A', 0), (1, 'b@x', 'B', 0), (2, 'a@x', 'A2', 0),
                           (2, 'c@x', 'C', 0);
INSERT INTO badges VALUES (1, 'gold', 'g'), (2, 'silver', 's'), (3, 'bronze', 'b');
"""
IDENTITY = '[capture.identity]\n"public.members" = "default"\n"public.badges" = "default"\n'


@pytest.mark.parametrize("mode", ["net", "txn"])
def test_identity_index_columns_are_the_key(source_dsn, target_dsn, workdir, mode):
    execute(source_dsn, SCHEMA)
    write_config(workdir, source_dsn, extra=IDENTITY)
    cli(workdir, "start", "--copy-to", target_dsn)
    log = SQLiteLog(workdir / "pgcarry-log.db")
    tables = log.read_manifest().tables
    log.close()
    assert (tables["public.members"].replica_identity, tables["public.members"].identity_key) == (
        "index", ["tenant", "email"])
    assert tables["public.badges"].identity_key == ["code"]
    execute(source_dsn,
            "INSERT INTO members VALUES (3, 'd@x', 'D', 1)",
            "UPDATE members SET visits = visits + 5 WHERE tenant = 1 AND email = 'a@x'",
            "UPDATE members SET email = 'b2@x', name = 'B!' WHERE tenant = 1 AND email = 'b@x'",
            "DELETE FROM members WHERE tenant = 2 AND email = 'a@x'",
            "UPDATE members SET visits = 9 WHERE tenant = 3",  # a row inserted in the window
            "UPDATE badges SET v = 'G' WHERE code = 'gold'",
            "UPDATE badges SET code = 'platinum' WHERE code = 'silver'",
            "DELETE FROM badges WHERE code = 'bronze'",
            "INSERT INTO badges VALUES (4, 'iron', 'i')")
    execute(target_dsn, "UPDATE members SET name = 'C (test)' WHERE email = 'c@x'")
    cli(workdir, "capture", "--until", "current")
    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run", "--mode", mode)
    assert plan["conflicts"] == [] and [d for d in plan["drift"] if d["blocking"]] == []
    cli(workdir, "replay", "--to", target_dsn, "--mode", mode)
    assert query(target_dsn, "SELECT * FROM members ORDER BY 1, 2") == [
        (1, "a@x", "A", 5), (1, "b2@x", "B!", 0), (2, "c@x", "C (test)", 0), (3, "d@x", "D", 9)]
    assert query(target_dsn, "SELECT * FROM badges ORDER BY 1") == [
        (1, "gold", "G"), (2, "platinum", "s"), (4, "iron", "i")]
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_a_key_the_target_lost_is_drift(source_dsn, target_dsn, workdir):
    execute(source_dsn, SCHEMA)
    write_config(workdir, source_dsn, extra=IDENTITY)
    cli(workdir, "start", "--copy-to", target_dsn)
    execute(target_dsn, "ALTER TABLE members DROP CONSTRAINT members_tenant_email_key")
    execute(source_dsn, "UPDATE members SET visits = 1 WHERE tenant = 1 AND email = 'a@x'")
    cli(workdir, "capture", "--until", "current")
    res = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert res.returncode == 4
    assert "captured key (tenant, email) is not the target's primary key" in res.stderr
