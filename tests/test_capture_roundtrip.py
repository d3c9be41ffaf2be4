"""Every operation and the listed types reach the log with exact values (real PostgreSQL)."""

from decimal import Decimal

import psycopg

from pgcarry.capture.replication import SESSION_OPTIONS
from pgcarry.changelog.sqlite import SQLiteLog
from tests.helpers import NAN_AS_NULL, cli, cli_json, execute, logged_changes, query, write_config

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE everything (
    id integer PRIMARY KEY, big bigint, num numeric(30,10), r real, d double precision,
    t text, b bytea, j jsonb, ia integer[], ta text[], ts timestamptz, dt date, u uuid,
    m mood, ok boolean, nothing text
);
CREATE TABLE docs (id integer PRIMARY KEY, title text, body text);
"""

# the row INSERTed below, as the log must hold it (values in UTC, numbers exact)
EVERYTHING_ROW = {
    "id": 1, "big": 9223372036854775807, "num": Decimal("123456789012345.1234567890"),
    "r": Decimal("3.1415927"), "d": Decimal("0.1"),
    "t": "quote ' dq \" back\\slash 한국어 ☃", "b": "00ff10", "j": '{"a": [1, 2.5]}',
    "ia": "{1,2,3}", "ta": '{"a b","c\\"d",NULL}', "ts": "2026-01-02 03:34:56.789012+00",
    "dt": "2026-02-28", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "m": "happy",
    "ok": True, "nothing": None,
}


def _wal2json_rows(dsn: str, slot: str, options: dict[str, str]) -> list[str]:
    """What wal2json itself sends for the row changes on `slot`, in the capture's session settings."""
    with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
        args = [x for kv in options.items() for x in kv]
        rows = conn.execute("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, "
                            + ", ".join(["%s"] * len(args)) + ")", (slot, *args)).fetchall()
    return [r[0] for r in rows if r[0][11] in "IUDT"]


def test_types_and_operations_round_trip(source_dsn, workdir):
    execute(source_dsn, SCHEMA)
    write_config(workdir, source_dsn, capture=NAN_AS_NULL)
    cli(workdir, "start", "--set-replica-identity")
    execute(source_dsn, "SELECT pg_create_logical_replication_slot('twin', 'wal2json')")
    execute(
        source_dsn,
        "SET TimeZone = 'Asia/Seoul'",
        """INSERT INTO everything VALUES (1, 9223372036854775807, 123456789012345.1234567890,
           3.1415927, 0.1, E'quote '' dq " back\\\\slash 한국어 ☃', '\\x00ff10', '{"a": [1, 2.5]}',
           '{1,2,3}', '{"a b","c\\"d",NULL}', '2026-01-02 12:34:56.789012+09', '2026-02-28',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', true, NULL)""",
    )
    execute(source_dsn, "UPDATE everything SET big = -1, m = 'sad' WHERE id = 1",
            "DELETE FROM everything WHERE id = 1", "TRUNCATE everything")
    cli(workdir, "capture", "--until", "current")

    changes = [c for _, c in logged_changes(workdir)]
    assert [c.action for c in changes] == ["I", "U", "D", "T"]
    ins, upd, dele, trunc = changes
    assert ins.new == EVERYTHING_ROW
    assert isinstance(ins.new["num"], Decimal) and isinstance(ins.new["big"], int)
    assert ins.types["num"] == "numeric(30,10)" and ins.types["m"] == "mood"
    assert upd.old == ins.new  # REPLICA IDENTITY FULL: the whole old image
    assert upd.new == {**ins.new, "big": -1, "m": "sad"}
    assert dele.old == upd.new and dele.new == {}
    assert (trunc.schema, trunc.table) == ("public", "everything")
    assert ins.pk == ["id"]
    # the compact log gives back wal2json's documents byte for byte, on both read paths
    log = SQLiteLog(workdir / "pgcarry-log.db", readonly=True)
    sent = _wal2json_rows(source_dsn, "twin", log.read_manifest().plugin_options)
    assert [c.raw for c in changes] == [r[5] for r in log.raw_changes()] == sent
    assert log._db.execute("SELECT sum(n) FROM chunks").fetchone() == (4,)  # stored as chunks
    log.close()

    status = cli_json(workdir, "status")
    assert status["tables"]["public.everything"] == {"insert": 1, "update": 1, "delete": 1, "truncate": 1}
    assert status["tables"]["public.docs"] == {"insert": 0, "update": 0, "delete": 0, "truncate": 0}
    assert status["log"]["transactions"] == 4
    assert status["slot"]["exists"] and status["slot"]["active"] is False
    assert status["slot"]["confirmed_flush_lsn"] == status["log"]["last_commit_lsn"]
    assert status["daemon"] == {"running": False, "pid": None}
    assert status["log"]["changes"] == 4 and status["log"]["uncompressed_bytes"] > 2000
    assert status["log"]["bytes_per_change"] == round(status["log"]["size_bytes"] / 4, 1)


def test_unchanged_toast_column_is_absent_not_null(source_dsn, workdir):
    execute(source_dsn, SCHEMA)
    write_config(workdir, source_dsn, tables=["public.docs"], capture=NAN_AS_NULL)
    cli(workdir, "start", "--set-replica-identity")
    # random text does not compress, so it is stored out of line (TOASTed)
    execute(source_dsn, "INSERT INTO docs SELECT 1, 'v1', string_agg(md5(g::text), '') "
                        "FROM generate_series(1, 400) g")
    execute(source_dsn, "UPDATE docs SET title = 'v2' WHERE id = 1")
    cli(workdir, "capture", "--until", "current")
    ins, upd = [c for _, c in logged_changes(workdir)]
    assert len(ins.new["body"]) == 400 * 32
    assert upd.new == {"id": 1, "title": "v2"}  # body omitted: unchanged TOAST, not NULL
    assert "body" not in upd.new
    assert query(source_dsn, "SELECT length(body) FROM docs") == [(12800,)]


def test_until_lsn_and_counts_per_table(source_dsn, workdir):
    execute(source_dsn, SCHEMA)
    write_config(workdir, source_dsn, capture=NAN_AS_NULL)
    cli(workdir, "start", "--set-replica-identity")
    execute(source_dsn, "INSERT INTO docs VALUES (1, 'a', 'x')", "INSERT INTO docs VALUES (2, 'b', 'y')")
    (mid,) = query(source_dsn, "SELECT pg_current_wal_lsn()::text")[0]
    execute(source_dsn, "UPDATE docs SET title = 'c'")
    out = cli_json(workdir, "capture", "--until", mid)
    assert out["transactions"] == 2 and out["changes"] == 2
    assert cli_json(workdir, "status")["tables"]["public.docs"]["update"] == 0
    out = cli_json(workdir, "capture", "--until", "current")
    assert out["transactions"] == 1 and out["changes"] == 2
    assert cli_json(workdir, "status")["tables"]["public.docs"] == {
        "insert": 2, "update": 2, "delete": 0, "truncate": 0}
    # nothing new: exits at once, captures nothing
    assert cli_json(workdir, "capture", "--until", "current")["transactions"] == 0
