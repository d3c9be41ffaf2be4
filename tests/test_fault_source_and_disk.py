"""The source restarted (fast, then immediate) under a steady writer, and the log's filesystem
filling up: the daemon reconnects or stops confirming, says why, resumes, and the log ends up
holding exactly what production committed, once each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from tests.helpers import cli, cli_json, execute, logged_changes, query, wait_running, write_config
from tests.test_capture_daemon import _wait_count


def _writer(dsn: str, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as c:
                while not stop.is_set():
                    n += 1
                    c.execute("INSERT INTO t VALUES (%s, repeat('x', 100))", (n,))
                    time.sleep(0.002)
        except psycopg.OperationalError:
            time.sleep(0.1)  # the server is restarting; an unsure commit is settled by the final read


def _daemon(workdir, errfile):
    return subprocess.Popen([sys.executable, "-m", "pgcarry", "capture"], cwd=workdir, text=True,
                            stdout=subprocess.DEVNULL, stderr=open(errfile, "w"))


def test_source_restarts_fast_and_immediate_under_load(source_cluster, source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, pad text)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--set-replica-identity")
    proc = _daemon(workdir, workdir / "capture.err")
    stop = threading.Event()
    w = threading.Thread(target=_writer, args=(source_dsn, stop))
    try:
        wait_running(workdir, proc)
        w.start()
        for mode in ("fast", "immediate"):
            time.sleep(1.0)
            source_cluster.restart(mode)
        time.sleep(1.0)
        stop.set()
        w.join()
        (n,) = query(source_dsn, "SELECT count(*) FROM t")[0]
        _wait_count(workdir, "public.t", n)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert "source connection lost, reconnecting" in (workdir / "capture.err").read_text()
    ids = [c.new["id"] for _, c in logged_changes(workdir)]
    assert sorted(ids) == [r[0] for r in query(source_dsn, "SELECT id FROM t ORDER BY id")]
    assert len(ids) > 200


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_stops_confirming_then_resumes(source_dsn, workdir):
    fs = workdir / "logfs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)], check=True)
    try:
        execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, pad text)")
        cfg = write_config(workdir, source_dsn)
        cfg.write_text(cfg.read_text().replace('"pgcarry-log.db"', '"logfs/log.db"'))
        cli(workdir, "start", "--set-replica-identity")
        st = os.statvfs(fs)
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 256 * 1024))
        proc = _daemon(workdir, workdir / "capture.err")
        wait_running(workdir, proc)
        for i in range(40):  # ~2 MB of changes for 256 kB of space
            execute(source_dsn, f"INSERT INTO t SELECT g, repeat('y', 400) FROM "
                                f"generate_series({i * 100 + 1}, {i * 100 + 100}) g")
        deadline = time.monotonic() + 60
        while "cannot write the change log" not in (workdir / "capture.err").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, (workdir / "capture.err").read_text()
            time.sleep(0.2)
        lsn = "SELECT confirmed_flush_lsn < pg_current_wal_lsn(), confirmed_flush_lsn::text FROM pg_replication_slots"
        behind, first = query(source_dsn, lsn)[0]
        time.sleep(2)
        assert behind and query(source_dsn, lsn)[0][1] == first  # nothing confirmed while full
        assert proc.poll() is None
        filler.unlink()
        _wait_count(workdir, "public.t", 4000)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert proc.returncode == 0
        ids = sorted(c.new["id"] for _, c in logged_changes_at(fs / "log.db"))
        assert ids == list(range(1, 4001))
        assert cli_json(workdir, "status", "--offline")["log"]["transactions"] == 40
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def logged_changes_at(path):
    from pgcarry.changelog.sqlite import SQLiteLog

    log = SQLiteLog(path)
    try:
        return [(t.xid, c) for t in log.transactions() for c in t.changes]
    finally:
        log.close()
