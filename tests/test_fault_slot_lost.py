"""A slot invalidated by max_slot_wal_keep_size while capture is stopped: status shouts, capture
records the loss, and replay, rehearse and cutover refuse (exit 3) unless --allow-incomplete."""

from __future__ import annotations

import pytest

from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.playground.localpg import LocalCluster
from tests.helpers import cli, cli_json, execute, query, write_config


@pytest.fixture(scope="module")
def small_wal_cluster():
    c = LocalCluster("slotlost", {"max_slot_wal_keep_size": "1MB", "min_wal_size": "32MB"}).start()
    yield c
    c.destroy()


def _invalidate(dsn: str) -> None:
    for i in range(4):
        execute(dsn, f"INSERT INTO t SELECT g, 'filler {i}' FROM generate_series({i * 10000 + 100}, "
                     f"{i * 10000 + 9000}) g", "SELECT pg_switch_wal()")
    execute(dsn, "CHECKPOINT")


def test_lost_slot_is_loud_recorded_and_refused(small_wal_cluster, target_dsn, workdir):
    src = small_wal_cluster.createdb("shop")
    execute(src, "CREATE TABLE t (id integer PRIMARY KEY, note text)")
    write_config(workdir, src)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(src, "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 10) g")
    cli(workdir, "capture", "--until", "current")
    _invalidate(src)
    assert query(src, "SELECT wal_status FROM pg_replication_slots") == [("lost",)]

    st = cli(workdir, "status", check=False)
    assert st.returncode == 3 and "WARNING: SLOT LOST" in st.stderr

    cap = cli(workdir, "capture", "--until", "current", check=False)
    assert cap.returncode == 3, cap.stderr
    assert "replication slot 'pgcarry' was lost (wal_status = lost)" in cap.stderr
    assert "take a new T0" in cap.stderr
    offline = cli(workdir, "status", "--offline", check=False)
    assert offline.returncode == 3 and "WARNING: LOG INCOMPLETE: slot pgcarry was lost" in offline.stderr
    log = SQLiteLog(workdir / "pgcarry-log.db")
    assert log.get_state("slot_lost")["reason"] == "wal_status = lost"
    log.close()

    for verb in (["replay", "--to", target_dsn], ["rehearse", "--from", target_dsn],
                 ["cutover", "--from", target_dsn, "--yes"]):
        out = cli(workdir, *verb, check=False)
        assert out.returncode == 3, (verb, out.stderr)
        assert out.stderr.startswith("pgcarry: error: the change log is incomplete: replication slot "
                                     "'pgcarry' was lost (wal_status = lost)"), out.stderr
        assert "--allow-incomplete" in out.stderr
    assert query(target_dsn, "SELECT count(*) FROM t") == [(0,)]  # nothing applied
    assert query(src, "SELECT count(*) FROM pg_db_role_setting") == [(0,)]  # never fenced

    # experts: the cutover goes ahead with what the log holds; later changes are lost, as warned
    out = cli_json(workdir, "cutover", "--from", target_dsn, "--yes", "--allow-incomplete")
    drain = next(p for p in out["phases"] if p["phase"] == "drain")
    assert out["complete"] and drain["detail"]["skipped"].startswith("slot lost (wal_status = lost)")
    assert query(src, "SELECT id, note FROM t ORDER BY id") == [(i, "before") for i in range(1, 11)]
    assert query(src, "SELECT count(*) FROM pg_replication_slots") == [(0,)]
