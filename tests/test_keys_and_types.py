"""Keys and column types real schemas have, through start, capture, replay and verify: every key
type serialises (as PostgreSQL's text) in the report, the journal and --json; types without btree
equality (json, xml, point, box, ...) compare as text; NOT NULL domains stage; and the target's
own TimeZone never changes a value."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from tests.helpers import cli, cli_json, execute, query, write_config

# (table, key column definitions, key values as SQL, the key as PostgreSQL prints it)
KEYS = [
    ("k_uuid", "k uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
     ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
    ("k_numeric", "k numeric", "1.50", ["1.50"]),
    ("k_date", "k date", "'2026-01-02'", ["2026-01-02"]),
    ("k_ts", "k timestamp", "'2026-01-02 03:04:05.5'", ["2026-01-02 03:04:05.5"]),
    ("k_tstz", "k timestamptz", "'2026-01-02 03:04:05+00'", ["2026-01-02 03:04:05+00"]),
    ("k_bytea", "k bytea", "'\\x00ff'", ["\\x00ff"]),
    ("k_array", "k int[]", "'{1,2}'", ["{1,2}"]),
    ("k_composite", "k pair", "'(1,\"x y\")'", ['(1,"x y")']),
    ("k_odd", "k text", "'a,b \"c\" (d)\\ é 键'", ['a,b "c" (d)\\ é 键']),
    ("k_multi", "k1 int, k2 text", "7, 'seven'", ["7", "seven"]),
]


def _set_timezone(dsn: str, tz: str) -> None:
    """The target database's own default TimeZone (replay must not depend on it)."""
    name = conninfo_to_dict(dsn)["dbname"]
    execute(dsn, f"ALTER DATABASE \"{name}\" SET TimeZone = '{tz}'")


def test_every_key_type_serialises_in_report_journal_and_json(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TYPE pair AS (a int, b text)")
    for table, cols, values, _ in KEYS:
        keys = ", ".join(c.split()[0] for c in cols.split(", "))
        execute(source_dsn, f"CREATE TABLE {table} ({cols}, v text, PRIMARY KEY ({keys}))",
                f"INSERT INTO {table} VALUES ({values}, 't0')")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    _set_timezone(target_dsn, "Asia/Seoul")
    for table, *_ in KEYS:  # both sides change v of the one row: a column conflict each
        execute(source_dsn, f"UPDATE {table} SET v = 'prod'")
        execute(target_dsn, f"UPDATE {table} SET v = 'test'")
    cli(workdir, "capture", "--until", "current")

    want = sorted((f"public.{t}", key) for t, _, _, key in KEYS)
    dry = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert sorted((c["table"], c["key"]) for c in dry["conflicts"]) == want
    text = cli(workdir, "replay", "--to", target_dsn, "--dry-run").stdout
    assert '(a,b "c" (d)\\ é 键)' not in text and '("a,b \\"c\\" (d)\\\\ é 键")' in text
    out = cli_json(workdir, "replay", "--to", target_dsn)
    assert out["status"] == "applied"
    assert sorted((c["table"], c["key"], c["column"], c["decision"]) for c in out["conflicts"]) == [
        (t, k, "v", "source-wins") for t, k in want]
    (journaled,) = query(target_dsn, "SELECT conflicts FROM pgcarry.replay_journal")
    assert sorted((c["table"], c["key"]) for c in journaled[0]) == want
    for table, *_ in KEYS:
        assert query(target_dsn, f"SELECT v FROM {table}") == [("prod",)], table
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


TYPED = """
CREATE TYPE with_json AS (n int, j json);
CREATE DOMAIN doc AS json;
CREATE TABLE shapes (
    id int PRIMARY KEY, j json, x xml, jb jsonb, p point, b box, poly polygon, l line,
    c circle, tv tsvector, d doc, ja json[], wj with_json, note text);
INSERT INTO shapes VALUES
  (1, '{"a": 1,  "b": [1, 2]}', '<a>1</a>', '{"a": 1}', '(1,2)', '(1,1),(0,0)',
   '((0,0),(1,0),(1,1))', '{1,-1,0}', '<(0,0),1>', 'a fat cat', '{"d": 1}', '{"{\\"e\\": 1}"}',
   '(1,"{\\"w\\": 1}")', 'n1'),
  (2, '{"a": 2}', '<a>2</a>', '{"a": 2}', '(2,2)', '(2,2),(0,0)', '((0,0),(2,0),(2,2))',
   '{1,-1,1}', '<(0,0),2>', 'two', '{"d": 2}', '{}', '(2,"{}")', 'n2');
"""
COLUMNS = ["j", "x", "jb", "p", "b", "poly", "l", "c", "tv", "d", "ja", "wj"]
PROD = {"j": '{"b": [3],   "a": 3}', "x": "<a>3</a>", "jb": '{"a": 3}', "p": "(3,3)",
        "b": "(3,3),(0,0)", "poly": "((0,0),(3,0),(3,3))", "l": "{1,-1,3}", "c": "<(0,0),3>",
        "tv": "three", "d": '{"d":   3}', "ja": '{"{\\"e\\": 3}"}', "wj": '(3,"{\\"w\\":3}")'}
# the test side moves the same columns of row 1; its box has the old box's area (1): `=` would
# call it unchanged and let production's value overwrite it
TEST = {"j": '{"t": 1}', "x": "<t/>", "jb": '{"t": 1}', "p": "(9,9)", "b": "(2,0.5),(0,0)",
        "poly": "((0,0),(9,0),(9,9))", "l": "{1,-1,9}", "c": "<(0,0),9>", "tv": "test",
        "d": '{"t":1}', "ja": '{"{\\"t\\": 1}"}', "wj": '(9,"{}")'}


def _sets(values: dict[str, str]) -> str:
    return ", ".join(f"{c} = '{v}'" for c, v in values.items())


def _shapes(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT id, " + ", ".join(f"{c}::text" for c in COLUMNS)
                 + ", note FROM shapes ORDER BY id")


def test_types_without_btree_equality_compare_as_text(source_dsn, target_dsn, workdir):
    execute(source_dsn, TYPED)
    write_config(workdir, source_dsn, extra='[replay.tables."public.shapes"]\ncolumns = { '
                 + ", ".join(f'{c} = "target-wins"' for c in COLUMNS) + " }\n")
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, f"UPDATE shapes SET {_sets(PROD)}",  # both rows
            "INSERT INTO shapes (id, j, x, p, b, note) VALUES (3, '[ 1 ]', '<n/>', '(0,0)', "
            "'(1,1),(0,0)', 'n3')", "DELETE FROM shapes WHERE id = 2")
    execute(target_dsn, f"UPDATE shapes SET {_sets(TEST)} WHERE id = 1")
    cli(workdir, "capture", "--until", "current")
    dry = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert sorted(c["column"] for c in dry["conflicts"]) == sorted(COLUMNS)
    assert {(c["key"][0], c["decision"]) for c in dry["conflicts"]} == {("1", "target-wins")}
    cli(workdir, "replay", "--to", target_dsn)
    rows = _shapes(target_dsn)
    assert [r[0] for r in rows] == [1, 3]
    assert rows[1] == _shapes(source_dsn)[1]  # production's insert, json text exactly as sent
    assert rows[1][1] == "[ 1 ]"
    test_side = _shapes(target_dsn)[0]
    want = query(target_dsn, "SELECT 1, " + ", ".join(f"'{v}'::{t}::text" for v, t in zip(
        TEST.values(), ["json", "xml", "jsonb", "point", "box", "polygon", "line", "circle",
                        "tsvector", "doc", "json[]", "with_json"])) + ", 'n1'")[0]
    assert test_side == want  # every column: the test side's value won its conflict
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_txn_mode_and_source_wins_on_json_and_xml(source_dsn, target_dsn, workdir):
    execute(source_dsn, TYPED)
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, f"UPDATE shapes SET {_sets(PROD)} WHERE id = 1",
            "UPDATE shapes SET note = 'prod' WHERE id = 2")
    execute(target_dsn, f"UPDATE shapes SET {_sets(TEST)} WHERE id = 1")
    cli(workdir, "capture", "--until", "current")
    cli(workdir, "replay", "--to", target_dsn, "--mode", "txn")
    assert _shapes(target_dsn) == _shapes(source_dsn)
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_target_timezone_never_changes_a_cast_value(source_dsn, target_dsn, workdir):
    """The test side changed a column from timestamp to timestamptz (and another the other way);
    the target database's default TimeZone is not UTC. Replay and verify read production's
    values in UTC, as capture wrote them."""
    execute(source_dsn, "CREATE TABLE ev (id int PRIMARY KEY, at timestamp, atz timestamptz)",
            "INSERT INTO ev VALUES (1, '2026-03-01 10:00', '2026-03-01 10:00+00')")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    _set_timezone(target_dsn, "Asia/Seoul")
    execute(target_dsn, "ALTER TABLE ev ALTER at TYPE timestamptz USING at AT TIME ZONE 'UTC', "
                        "ALTER atz TYPE timestamp USING atz AT TIME ZONE 'UTC'")
    execute(source_dsn, "INSERT INTO ev VALUES (2, '2026-03-02 23:30', '2026-03-02 23:30+00')",
            "UPDATE ev SET at = '2026-03-01 11:00', atz = '2026-03-01 11:00+00' WHERE id = 1")
    cli(workdir, "capture", "--until", "current")
    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert sorted((d["column"], d["kind"]) for d in plan["drift"]) == [
        ("at", "type-change"), ("atz", "type-change")]
    cli(workdir, "replay", "--to", target_dsn)
    rows = query(target_dsn, "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), "
                             "atz::text FROM ev ORDER BY id")
    assert rows == [(1, "2026-03-01 11:00", "2026-03-01 11:00:00"),
                    (2, "2026-03-02 23:30", "2026-03-02 23:30:00")]
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_not_null_domains_stage_and_their_checks_apply_on_write(source_dsn, target_dsn, workdir):
    execute(source_dsn,
            "CREATE DOMAIN email AS text NOT NULL CHECK (VALUE LIKE '%@%')",
            "CREATE DOMAIN tags AS text[] NOT NULL",
            "CREATE TYPE addr AS (city text, zip text)",
            "CREATE DOMAIN address AS addr NOT NULL CHECK ((VALUE).city IS NOT NULL)",
            "CREATE DOMAIN short AS email CHECK (length(VALUE) < 40)",
            "CREATE TABLE people (id int PRIMARY KEY, mail email, t tags, home address, s short, "
            "n int)",
            "INSERT INTO people SELECT i, 'p' || i || '@x', '{a}', '(Seoul,1)', 's@x', i "
            "FROM generate_series(1, 4) i")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, "INSERT INTO people VALUES (5, 'p5@x', '{b}', '(Busan,2)', 's5@x', 5)",
            "UPDATE people SET n = 20, t = '{c,d}' WHERE id = 2",
            "DELETE FROM people WHERE id = 3")
    execute(target_dsn, "UPDATE people SET n = 40 WHERE id = 4")
    cli(workdir, "capture", "--until", "current")
    for mode in ("net", "txn"):  # dry runs stage every effect, inserts included
        assert cli_json(workdir, "replay", "--to", target_dsn, "--dry-run", "--mode", mode)[
            "conflicts"] == []
    cli(workdir, "replay", "--to", target_dsn)
    cols = "id, mail::text, t::text, home::text, s::text, n"
    assert query(target_dsn, f"SELECT {cols} FROM people ORDER BY id") == [
        (1, "p1@x", "{a}", "(Seoul,1)", "s@x", 1), (2, "p2@x", "{c,d}", "(Seoul,1)", "s@x", 20),
        (4, "p4@x", "{a}", "(Seoul,1)", "s@x", 40), (5, "p5@x", "{b}", "(Busan,2)", "s5@x", 5)]
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_a_domain_check_the_test_side_tightened_fails_the_write(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE DOMAIN email AS text NOT NULL CHECK (VALUE LIKE '%@%')",
            "CREATE TABLE people (id int PRIMARY KEY, mail email)",
            "INSERT INTO people VALUES (1, 'a@x')")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(target_dsn, "ALTER DOMAIN email ADD CONSTRAINT dotted CHECK (VALUE LIKE '%.%') NOT VALID")
    execute(source_dsn, "INSERT INTO people VALUES (2, 'b@x')")
    cli(workdir, "capture", "--until", "current")
    res = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert res.returncode == 4 and "dotted" in res.stderr and "public.people" in res.stderr
    assert query(target_dsn, "SELECT id FROM people") == [(1,)]
    assert query(target_dsn, "SELECT to_regclass('pgcarry.replay_journal')") == [(None,)]

