"""The daemon under kill -9, SIGTERM, a second daemon, and a transaction too big for memory."""

import random
import signal
import threading
import time

import psycopg

from pgcarry.schemas.lsn import Lsn

from tests.helpers import (
    cli, cli_json, execute, logged_changes, query, kill_capture_repeatedly, spawn, wait_peak_rss_mb,
    wait_running, write_config,
)


def test_kill_9_five_times_loses_nothing_and_stores_nothing_twice(source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, txn integer, part integer)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--set-replica-identity")
    committed: dict[int, int] = {}
    rolled_back: set[int] = set()
    done = threading.Event()

    def writer() -> None:
        rng = random.Random(7)
        next_id = 1
        with psycopg.connect(source_dsn) as conn:
            for txn in range(1, 1501):
                parts = rng.randint(1, 4)
                for part in range(parts):
                    conn.execute("INSERT INTO t VALUES (%s, %s, %s)", (next_id, txn, part))
                    next_id += 1
                if txn % 10 == 0:
                    conn.rollback()
                    rolled_back.add(txn)
                else:
                    conn.commit()
                    committed[txn] = parts
                if txn % 50 == 0:
                    time.sleep(0.05)
        done.set()

    w = threading.Thread(target=writer)
    w.start()
    kill_capture_repeatedly(workdir, 5, random.Random(11), 0.2, 1.0)
    w.join()
    cli(workdir, "capture", "--until", "current")

    rows = [(xid, c.new["txn"], c.new["part"]) for xid, c in logged_changes(workdir)]
    seen = [(txn, part) for _, txn, part in rows]
    assert len(seen) == len(set(seen)), "a change was stored twice"
    per_txn: dict[int, int] = {}
    for _, txn, _ in rows:
        per_txn[txn] = per_txn.get(txn, 0) + 1
    assert per_txn == committed  # every committed transaction, whole, and nothing rolled back
    assert not rolled_back & per_txn.keys()
    # one source transaction is one log transaction
    assert len({xid for xid, _, _ in rows}) == len(committed)
    assert cli_json(workdir, "status")["log"]["transactions"] == len(committed)


def test_sigterm_finishes_durably_and_second_daemon_is_refused(source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--set-replica-identity")
    proc = spawn(workdir, "capture")
    wait_running(workdir, proc)
    status = cli_json(workdir, "status")
    assert status["daemon"]["running"] and status["daemon"]["pid"] == proc.pid
    assert status["slot"]["active"] is True

    second = cli(workdir, "capture", check=False)
    assert second.returncode == 3
    assert f"another capture daemon holds the log (pid {proc.pid})" in second.stderr

    execute(source_dsn, "INSERT INTO t SELECT generate_series(1, 1000)")
    deadline = time.monotonic() + 30
    while cli_json(workdir, "status", "--offline")["tables"]["public.t"]["insert"] < 1000:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "captured 1 transactions (1000 changes)" in out
    status = cli_json(workdir, "status")
    assert status["daemon"]["running"] is False
    # an idle daemon may confirm past its last commit (the server's wal_end between transactions)
    assert Lsn.parse(status["slot"]["confirmed_flush_lsn"]) >= Lsn.parse(status["log"]["last_commit_lsn"])


def test_one_big_transaction_is_not_held_in_memory(source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE big (id integer PRIMARY KEY, pad text)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--set-replica-identity")
    execute(source_dsn, "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 500000) g")
    proc = spawn(workdir, "capture", "--until", "current")
    peak_mb = wait_peak_rss_mb(proc)
    assert proc.returncode == 0, proc.stderr.read()
    # 500,000 rows of ~330 bytes of JSON are ~165 MB as text alone; the daemon streams them
    assert 0 < peak_mb < 150, f"capture daemon peak RSS {peak_mb:.0f} MB"
    assert cli_json(workdir, "status", "--offline")["tables"]["public.big"]["insert"] == 500000
    (n,) = query(source_dsn, "SELECT count(*) FROM big")[0]
    assert n == 500000


def test_drop_needs_yes(source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--set-replica-identity")
    assert "Run again with --yes" in cli(workdir, "drop").stdout
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgcarry'") == [(1,)]
    assert cli(workdir, "drop", "--yes").stdout == "dropped replication slot 'pgcarry'\n"
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgcarry'") == [(0,)]
    missing = cli(workdir, "drop", "--yes", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def _wait_count(workdir, table, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while cli_json(workdir, "status", "--offline")["tables"][table]["insert"] < n:
        assert time.monotonic() < deadline, f"{table} never reached {n} inserts"
        time.sleep(0.2)


def test_metrics_and_reconnect_after_source_restart(source_cluster, source_dsn, workdir):
    import urllib.request

    from pgcarry.playground.localpg import free_port

    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--set-replica-identity")
    port = free_port()
    proc = spawn(workdir, "capture", "--metrics-port", str(port))
    try:
        wait_running(workdir, proc)
        execute(source_dsn, "INSERT INTO t VALUES (1), (2), (3)")
        _wait_count(workdir, "public.t", 3)
        source_cluster.restart("immediate")  # the daemon must reconnect and lose nothing
        execute(source_dsn, "INSERT INTO t VALUES (4)", "INSERT INTO t VALUES (5)")
        _wait_count(workdir, "public.t", 5)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'pgcarry_changes_total{operation="insert",table="public.t"} 5.0' in metrics
        assert "pgcarry_transactions_total 3.0" in metrics
        assert "pgcarry_confirmed_lsn " in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert sorted(c.new["id"] for _, c in logged_changes(workdir)) == [1, 2, 3, 4, 5]
