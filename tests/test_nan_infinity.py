"""NaN and ±Infinity: wal2json sends them as null. Where the target column is NOT NULL, replay
refuses with the table, key, column and LSN instead of writing a wrong value; a nullable column
cannot tell them from a real NULL (documented in docs/guarantees.md)."""

from __future__ import annotations

from tests.helpers import cli, cli_json, execute, query, write_config


def test_nan_and_infinity_are_reported_not_written(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE m (id int PRIMARY KEY, n numeric NOT NULL, "
                        "f float8 NOT NULL, g float8)",
            "INSERT INTO m VALUES (3, 1, 1, 1)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, "INSERT INTO m VALUES (1, 'NaN', 'Infinity', '-Infinity')",
            "INSERT INTO m VALUES (2, 1.5, 2.5, 3.5)",
            "UPDATE m SET f = '-Infinity' WHERE id = 3")
    cli(workdir, "capture", "--until", "current")

    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    lost = sorted((c["key"], c["column"]) for c in plan["conflicts"] if c["kind"] == "lost-value")
    assert lost == [(["1"], "f"), (["1"], "n"), (["3"], "f")]
    out = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert out.returncode == 4
    assert "is null in the log but NOT NULL in the target: production wrote NaN or Infinity" in out.stderr
    assert "table=public.m" in out.stderr
    assert query(target_dsn, "SELECT * FROM m") == [(3, 1, 1.0, 1.0)]  # nothing changed

    execute(source_dsn, "UPDATE m SET n = 0, f = 0 WHERE id = 1", "UPDATE m SET f = 0 WHERE id = 3")
    cli(workdir, "capture", "--until", "current")
    cli(workdir, "replay", "--to", target_dsn)
    from decimal import Decimal
    assert query(target_dsn, "SELECT * FROM m ORDER BY id") == [
        (1, Decimal(0), 0.0, None),  # the limitation: g was -Infinity on production
        (2, Decimal("1.5"), 2.5, 3.5), (3, Decimal(1), 0.0, 1.0)]
    assert query(source_dsn, "SELECT g FROM m WHERE id = 1") == [(float("-inf"),)]
