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


# schema and table names that are patterns in some language: pg_dump -n/-t (psql rules), wal2json
# add-tables, and the config's own patterns. Each pair is captured by its exact config pattern.
HOSTILE = [("*", "t*"), ('a"b', 'q"t'), ("S p.a,c e", "Up.Per, x"), ("?", "?"), ("[x]", "[t]"),
           ("b\\s", "back\\slash"), ("Upper", "MiXed"), ("스키마 ü", "테이블\tü"),
           ("r+(e){2}^$|", "(a|b)+")]
DECOYS = [("a", "t"), ("x", "t"), ("ab", "decoy")]  # what the patterns would match unescaped


def test_pattern_names_are_matched_exactly_in_copy_capture_and_replay(source_dsn, target_dsn, workdir):
    from pgcarry.schemas.patterns import exact

    stmts = []
    for s, t in HOSTILE + DECOYS:
        stmts += [f"CREATE SCHEMA IF NOT EXISTS {_q(s)}",
                  f"CREATE TABLE {_q(s, t)} (id int PRIMARY KEY, v text)",
                  f"INSERT INTO {_q(s, t)} VALUES (1, 'one'), (2, 'two')"]
    stmts.append(f"CREATE TABLE {_q('a', 'decoy')} (id int PRIMARY KEY)")  # in no captured schema
    execute(source_dsn, *stmts)
    write_config(workdir, source_dsn, tables=[exact(s, t) for s, t in HOSTILE],
                 extra='[copy]\njobs = 1\n')
    start = cli_json(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    assert sorted(start["tables"]) == sorted(f"{s}.{t}" for s, t in HOSTILE)
    schemas = {r[0] for r in query(target_dsn, "SELECT nspname FROM pg_namespace")}
    assert {s for s, _ in HOSTILE} <= schemas and not {"a", "x", "ab"} & schemas
    for s, t in HOSTILE + DECOYS:
        execute(source_dsn, f"INSERT INTO {_q(s, t)} VALUES (3, 'three')",
                f"UPDATE {_q(s, t)} SET v = 'TWO' WHERE id = 2", f"DELETE FROM {_q(s, t)} WHERE id = 1")
    cli(workdir, "capture", "--until", "current")
    tables = cli_json(workdir, "status", "--offline")["tables"]
    assert tables == {f"{s}.{t}": {"insert": 1, "update": 1, "delete": 1, "truncate": 0} for s, t in HOSTILE}
    cli(workdir, "replay", "--to", target_dsn)
    for s, t in HOSTILE:
        assert query(target_dsn, f"SELECT * FROM {_q(s, t)} ORDER BY 1") == [(2, "TWO"), (3, "three")], (s, t)
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]
