"""Names with quotes, spaces, semicolons, dots, commas and unicode round-trip through start, capture
and replay: identifiers are always quoted, values always parameters."""

from __future__ import annotations

from psycopg import sql

from tests.helpers import cli, cli_json, execute, query, write_config

TABLE = 'Ord"ers; DROP TABLE x;--, v1.2 주문 ü'
KEY = 'i"d, key.1'
COL = "co'l\"; ñ 값"


def _q(*names: str) -> str:
    return sql.SQL(".").join(sql.Identifier(n) for n in names).as_string(None)


def test_hostile_names_round_trip(source_dsn, target_dsn, workdir):
    t, k, c = _q("public", TABLE), _q(KEY), _q(COL)
    execute(source_dsn, "CREATE TABLE x (id int PRIMARY KEY)",
            f"CREATE TABLE {t} ({k} int PRIMARY KEY, {c} text)",
            f"INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, f"INSERT INTO {t} VALUES (4, 'fo''ur;\"')",
            f"UPDATE {t} SET {c} = 'TWO' WHERE {k} = 2",
            f"DELETE FROM {t} WHERE {k} = 3",
            f"UPDATE {t} SET {k} = 10 WHERE {k} = 1")
    cli(workdir, "capture", "--until", "current")
    counts = cli_json(workdir, "status", "--offline")["tables"][f"public.{TABLE}"]
    assert counts == {"insert": 1, "update": 2, "delete": 1, "truncate": 0}
    cli(workdir, "replay", "--to", target_dsn)
    want = [(2, "TWO"), (4, "fo'ur;\""), (10, "one")]
    assert query(source_dsn, f"SELECT * FROM {t} ORDER BY 1") == want
    assert query(target_dsn, f"SELECT * FROM {t} ORDER BY 1") == want
    assert query(target_dsn, "SELECT count(*) FROM x") == [(0,)]  # still there
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]
