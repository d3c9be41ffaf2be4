"""Partitioned tables: wal2json names each change by its partition; pgcarry captures every
partition (in other schemas too, and those created or attached after T0), counts and replays them
under the partitioned table the config names, and sets REPLICA IDENTITY FULL on every leaf."""

from __future__ import annotations

from tests.helpers import cli, cli_json, execute, query, write_config

ROOT = "public.orders"
DDL = ["CREATE SCHEMA part",
       "CREATE TABLE orders (id int, region text, amount int, note text, PRIMARY KEY (id, region)) "
       "PARTITION BY LIST (region)",
       "CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu')",
       "CREATE TABLE part.orders_us PARTITION OF orders FOR VALUES IN ('us', 'ca') PARTITION BY LIST (region)",
       "CREATE TABLE part.orders_us1 PARTITION OF part.orders_us FOR VALUES IN ('us')",
       "CREATE TABLE part.orders_ca PARTITION OF part.orders_us FOR VALUES IN ('ca')",
       "CREATE TABLE part.other (id int PRIMARY KEY)"]  # in a streamed schema, not captured
ROWS = "SELECT id, region, amount, note FROM orders ORDER BY id, region"


def _identity(dsn: str) -> dict[str, str]:
    return dict(query(dsn, "SELECT c.oid::regclass::text, c.relreplident::text FROM pg_class c "
                           "JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.relkind IN ('r', 'p') ORDER BY 1"))


def test_partitions_are_captured_counted_and_replayed_under_the_root(source_dsn, target_dsn, workdir):
    execute(source_dsn, *DDL, "INSERT INTO orders VALUES (1, 'eu', 10, 'a'), (2, 'us', 20, 'b'), "
                              "(3, 'ca', 30, 'c'), (4, 'eu', 40, 'd')")
    write_config(workdir, source_dsn)
    refused = cli(workdir, "start", check=False)
    assert refused.returncode == 2
    assert "for: part.orders_ca, part.orders_us1, public.orders_eu --" in refused.stderr
    execute(source_dsn, "ALTER TABLE orders REPLICA IDENTITY FULL")  # the parent's own: not enough
    assert "for: part.orders_ca, part.orders_us1, public.orders_eu --" in cli(workdir, "start", check=False).stderr

    t0 = cli_json(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    assert list(t0["tables"]) == [ROOT]  # part.other is not captured, the partitions are the root's
    assert t0["tables"][ROOT]["partitions"] == [["part", "orders_ca"], ["part", "orders_us"],
                                                ["part", "orders_us1"], ["public", "orders_eu"]]
    assert t0["tables"][ROOT]["replica_identity"] == "full"
    assert {k: v for k, v in _identity(source_dsn).items() if k != "part.orders_us"} == {
        "orders_eu": "f", "part.orders_ca": "f", "part.orders_us1": "f"}

    execute(source_dsn,
            "INSERT INTO orders VALUES (5, 'us', 50, 'e'), (6, 'ca', 60, 'f'), (7, 'eu', 70, 'g')",
            "UPDATE orders SET amount = 21 WHERE id = 2",
            "DELETE FROM orders WHERE id = 3",
            "UPDATE orders SET region = 'us', note = 'moved' WHERE id = 4",  # eu -> us: D + I
            "INSERT INTO part.other VALUES (1)",
            # a partition created after T0, in another schema, and a filled table attached later
            "CREATE TABLE part.orders_asia PARTITION OF orders FOR VALUES IN ('asia')",
            "ALTER TABLE part.orders_asia REPLICA IDENTITY FULL",
            "INSERT INTO orders VALUES (8, 'asia', 80, 'h')",
            "UPDATE orders SET note = 'H' WHERE id = 8",
            "CREATE TABLE orders_sa (id int, region text, amount int, note text, PRIMARY KEY (id, region))",
            "ALTER TABLE orders_sa REPLICA IDENTITY FULL",
            "INSERT INTO orders_sa VALUES (9, 'sa', 90, 'i')",
            "ALTER TABLE orders ATTACH PARTITION orders_sa FOR VALUES IN ('sa')",
            "UPDATE orders SET amount = 91 WHERE id = 9",
            "INSERT INTO orders VALUES (10, 'sa', 100, 'j')")
    cli(workdir, "capture", "--until", "current")
    st = cli_json(workdir, "status")
    assert st["tables"] == {ROOT: {"insert": 7, "update": 3, "delete": 2, "truncate": 0}}
    assert sorted(st["partitions_learned"]) == ["part.orders_asia", "public.orders_sa"]
    assert st["unsafe"] == [] and st["warnings"] == []

    # DDL is the test side's job: it creates the same partitions before replay
    execute(target_dsn, "CREATE TABLE part.orders_asia PARTITION OF orders FOR VALUES IN ('asia')",
            "CREATE TABLE orders_sa PARTITION OF orders FOR VALUES IN ('sa')")
    out = cli_json(workdir, "replay", "--to", target_dsn)
    assert out["tables"][0]["table"] == ROOT and out["tables"][0]["applied"] == {"insert": 7, "update": 1, "delete": 2, "reinsert": 0}
    want = [(1, "eu", 10, "a"), (2, "us", 21, "b"), (4, "us", 40, "moved"), (5, "us", 50, "e"),
            (6, "ca", 60, "f"), (7, "eu", 70, "g"), (8, "asia", 80, "H"), (9, "sa", 91, "i"),
            (10, "sa", 100, "j")]
    assert query(source_dsn, ROWS) == want and query(target_dsn, ROWS) == want
    assert query(target_dsn, "SELECT tableoid::regclass::text, id FROM orders WHERE id IN (4, 8) "
                             "ORDER BY id") == [("part.orders_us1", 4), ("part.orders_asia", 8)]
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_a_partition_detached_truncated_alone_or_out_of_reach_is_refused(source_dsn, target_dsn, workdir):
    execute(source_dsn, *DDL, "INSERT INTO orders VALUES (1, 'eu', 10, 'a'), (2, 'us', 20, 'b')")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, "TRUNCATE orders", "INSERT INTO orders VALUES (3, 'ca', 30, 'c')")
    cli(workdir, "capture", "--until", "current")
    st = cli_json(workdir, "status")
    assert st["tables"][ROOT]["truncate"] == 1 and st["unsafe"] == []  # the whole table: once

    execute(source_dsn, "TRUNCATE part.orders_ca", "ALTER TABLE orders DETACH PARTITION orders_eu",
            "CREATE SCHEMA elsewhere",  # not streamed: its rows would never reach the log
            "CREATE TABLE elsewhere.orders_x PARTITION OF orders FOR VALUES IN ('x')")
    cli(workdir, "capture", "--until", "current")
    status = cli(workdir, "status", check=False)
    assert status.returncode == 7
    assert "partition part.orders_ca was truncated alone" in status.stderr
    assert "partition public.orders_eu was detached or dropped on production" in status.stderr
    assert "partition elsewhere.orders_x was created in schema elsewhere, which capture does not stream" in status.stderr
    out = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert out.returncode == 3 and "cannot replay public.orders exactly" in out.stderr
    assert "table=public.orders" in out.stderr
    assert query(target_dsn, ROWS.replace("id, region, amount, note", "id")) == [(1,), (2,)]
