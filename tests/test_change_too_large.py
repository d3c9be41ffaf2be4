"""A single change whose wal2json text exceeds 1 GB: the server fails decoding it at the same LSN on
every retry, so capture stops with exit 7 naming table and LSN, records it (status warns, replay
refuses), while restarts and network cuts keep being retried (capture/failure.py)."""

from __future__ import annotations

import time

import pytest

from pgcarry.capture.failure import classify
from tests.helpers import cli, execute, query, write_config

CTX = 'slot "pgcarry", output plugin "wal2json", in the change callback, associated LSN 0/268A150'


@pytest.mark.parametrize("primary, detail, context, want", [
    # real server texts (PostgreSQL 15, wal2json 2.5)
    ("out of memory", "Cannot enlarge string buffer containing 1073741810 bytes by 32 more bytes.",
     CTX, ("too-large", "0/268A150")),
    ("invalid memory alloc request size 1080000003", None, CTX, ("too-large", "0/268A150")),
    ('option "numeric-data-types-as-string" = "1" is unknown', None,
     'slot "pgcarry", output plugin "wal2json", in the startup callback', ("plugin", None)),
    # transient: retried
    ("out of memory", "Failed on request of size 8192 in memory context \"ExprContext\".", CTX, None),
    ("terminating connection due to administrator command", None, None, None),
    ("server closed the connection unexpectedly", None, None, None),
])
def test_classification_from_server_texts(primary, detail, context, want):
    f = classify(primary, detail, context)
    assert (None if f is None else (f.kind, f.lsn)) == want


def test_a_change_too_large_stops_capture_with_table_and_lsn(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE EXTENSION pg_walinspect",
            "CREATE TABLE big (id int PRIMARY KEY, t text)", "CREATE TABLE small (id int PRIMARY KEY)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    # 180 MB of U+0001, which JSON escapes as \u0001: about 1.08 GB of wal2json text
    execute(source_dsn, "INSERT INTO small VALUES (1)", "INSERT INTO big VALUES (1, repeat(chr(1), 180000000))")
    lsn = query(source_dsn, "SELECT max(start_lsn)::text FROM pg_get_wal_records_info("
                            "(SELECT confirmed_flush_lsn FROM pg_replication_slots), pg_current_wal_lsn()) "
                            "WHERE resource_manager = 'Heap' AND record_type LIKE 'INSERT%'")[0][0]
    execute(source_dsn, "INSERT INTO small VALUES (2)")
    t0 = time.monotonic()
    out = cli(workdir, "capture", "--until", "current", check=False)
    assert out.returncode == 7, out.stderr
    assert time.monotonic() - t0 < 120  # no endless "connection lost" retry
    assert "a change is too large for wal2json to decode" in out.stderr
    assert f"table=public.big, lsn={lsn}" in out.stderr
    st = cli(workdir, "status", check=False)
    assert st.returncode == 7
    assert f"CAPTURE STOPPED at LSN {lsn} (public.big)" in st.stderr
    assert cli(workdir, "replay", "--to", target_dsn, check=False).returncode == 3
    cli(workdir, "replay", "--to", target_dsn, "--allow-incomplete")  # what came before it
    assert query(target_dsn, "SELECT id FROM small") == [(1,)]
