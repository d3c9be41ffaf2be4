"""The real CLI (`start`, `capture`, `status`) with the Kafka log: the capture round trip, kill -9
between Kafka's acknowledgement and the slot confirmation, and a broker outage under live traffic."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from pgcarry.changelog import open_log
from pgcarry.changelog.kafka_index import COMMIT, header
from pgcarry.changelog.kafka_io import KafkaIO
from pgcarry.cli.common import load_config
from pgcarry.schemas.lsn import Lsn
from tests.helpers import NAN_AS_NULL, cli, cli_json, execute, query, spawn, wait_running, write_config
from tests.kafka_fixture import kafka_broker, private_kafka, use_kafka  # noqa: F401
from tests.test_capture_roundtrip import EVERYTHING_ROW, SCHEMA

pytestmark = pytest.mark.kafka


def _config(workdir: Path):  # type: ignore[no-untyped-def]
    import argparse

    return load_config(argparse.Namespace(config=str(workdir / "pgcarry.toml")))


def logged(workdir: Path) -> list[tuple[int, int, list]]:
    """(xid, commit LSN, changes) of every transaction the Kafka log reads, in order."""
    cfg = _config(workdir)
    with open_log(cfg.log, slot=cfg.source.slot, readonly=True) as log:
        return [(t.xid, t.commit_lsn.value, list(t.changes)) for t in log.transactions()]


def marker_copies(workdir: Path) -> dict[int, int]:
    """Commit LSN -> number of commit markers in the topic (raw, before de-duplication)."""
    cfg = _config(workdir)
    assert cfg.log.kafka is not None
    io = KafkaIO(cfg.log.kafka.bootstrap_servers, {})
    try:
        copies: dict[int, int] = {}
        for chunk in io.read(cfg.log.kafka.topic or "", 0, io.end_offset(cfg.log.kafka.topic or "")):
            for r in chunk:
                if header(r, "type") == COMMIT:
                    lsn = Lsn.parse(header(r, "commit_lsn").decode()).value  # type: ignore[union-attr]
                    copies[lsn] = copies.get(lsn, 0) + 1
        return copies
    finally:
        io.close()


def test_capture_round_trip_into_kafka(kafka_broker, source_dsn, workdir):
    execute(source_dsn, SCHEMA)
    use_kafka(write_config(workdir, source_dsn, capture=NAN_AS_NULL), kafka_broker.bootstrap)
    cli(workdir, "start", "--set-replica-identity")
    execute(
        source_dsn,
        """INSERT INTO everything VALUES (1, 9223372036854775807, 123456789012345.1234567890,
           3.1415927, 0.1, E'quote '' dq " back\\\\slash 한국어 ☃', '\\x00ff10', '{"a": [1, 2.5]}',
           '{1,2,3}', '{"a b","c\\"d",NULL}', '2026-01-02 12:34:56.789012+09', '2026-02-28',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', true, NULL)""",
    )
    execute(source_dsn, "UPDATE everything SET big = -1, m = 'sad' WHERE id = 1",
            "DELETE FROM everything WHERE id = 1", "TRUNCATE everything")
    execute(source_dsn, "INSERT INTO docs SELECT 1, 'v1', string_agg(md5(g::text), '') "
                        "FROM generate_series(1, 400) g", "UPDATE docs SET title = 'v2' WHERE id = 1")
    cli(workdir, "capture", "--until", "current")

    changes = [c for _, _, cs in logged(workdir) for c in cs]
    assert [(c.relation, c.action) for c in changes] == [
        ("public.everything", a) for a in "IUDT"] + [("public.docs", "I"), ("public.docs", "U")]
    ins, upd, dele, trunc, doc, doc_upd = changes
    assert ins.new == EVERYTHING_ROW
    assert upd.old == ins.new and upd.new == {**ins.new, "big": -1, "m": "sad"}
    assert dele.old == upd.new and dele.new == {}
    assert (trunc.schema, trunc.table) == ("public", "everything")
    assert len(doc.new["body"]) == 12800 and doc_upd.new == {"id": 1, "title": "v2"}  # TOAST absent

    status = cli_json(workdir, "status")
    assert status["tables"]["public.everything"] == {"insert": 1, "update": 1, "delete": 1, "truncate": 1}
    assert status["tables"]["public.docs"] == {"insert": 1, "update": 1, "delete": 0, "truncate": 0}
    assert status["log"]["transactions"] == 6
    assert status["slot"]["confirmed_flush_lsn"] == status["log"]["last_commit_lsn"]
    assert status["manifest"]["slot"] == "pgcarry"
    assert not list(workdir.glob("*.db"))  # no local log file


_KILL_AFTER_ACK = """
import os, signal, sys
from pgcarry.changelog.kafka import KafkaLog
from pgcarry.cli.main import main
real = KafkaLog.sync
def sync(self):
    before = self.__dict__.setdefault("_test_opened_at", self._durable)
    durable = real(self)
    if durable != before:  # Kafka acknowledged new transactions: die before the slot hears of it
        os.kill(os.getpid(), signal.SIGKILL)
    return durable
KafkaLog.sync = sync
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_between_ack_and_slot_confirmation(kafka_broker, source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, txn integer)")
    use_kafka(write_config(workdir, source_dsn), kafka_broker.bootstrap)
    cli(workdir, "start", "--set-replica-identity")
    for txn in range(1, 6):
        execute(source_dsn, f"INSERT INTO t SELECT g, {txn} FROM generate_series({txn * 10}, {txn * 10 + 2}) g")
    (confirmed_before,) = query(source_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_ACK, "capture", "--until", "current"],
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert query(source_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots") == [(confirmed_before,)]
    acked = logged(workdir)
    assert acked  # in Kafka, but the slot was never told: the source sends them again
    cli(workdir, "capture", "--until", "current")
    got = logged(workdir)
    assert [[(c.new["id"], c.new["txn"]) for c in cs] for _, _, cs in got] == [
        [(txn * 10 + i, txn) for i in range(3)] for txn in range(1, 6)]
    assert got[: len(acked)] == acked
    copies = marker_copies(workdir)
    assert set(copies) == {lsn for _, lsn, _ in got}
    assert all(n == 1 for n in copies.values())  # the restarted writer skipped what Kafka held
    (confirmed,) = query(source_dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
    assert cli_json(workdir, "status")["log"]["last_commit_lsn"] == confirmed


def test_oversized_change_stops_capture_with_table_and_lsn(kafka_broker, source_dsn, workdir):
    """A change larger than the topic's max.message.bytes: a fatal one-line error naming table and
    LSN (exit 3, no endless retry), recorded for `status`, nothing confirmed past it."""
    execute(source_dsn, "CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    topic = f"big-{time.monotonic_ns()}"
    io = KafkaIO(kafka_broker.bootstrap, {})
    try:
        io.create_topic(topic, 1, {"max.message.bytes": "200000", "retention.ms": "-1"})
    finally:
        io.close()
    use_kafka(write_config(workdir, source_dsn), kafka_broker.bootstrap, topic)
    cli(workdir, "start", "--set-replica-identity")
    execute(source_dsn, "INSERT INTO docs VALUES (1, 'small')")
    execute(source_dsn, "INSERT INTO docs SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 10000) g")
    (big_lsn,) = query(source_dsn, "SELECT pg_current_wal_lsn()::text")[0]
    r = cli(workdir, "capture", "--until", "current", check=False, timeout=120)
    assert r.returncode == 3, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("pgcarry: error:")]
    assert "a change of public.docs is 320" in line and "stores records of at most 200000 bytes" in line
    assert "relation=public.docs, lsn=0/" in line and "commit_lsn=0/" in line
    status = cli(workdir, "status", check=False)
    assert "CAPTURE STOPPED: a change of public.docs is 320" in status.stderr
    assert [t["insert"] for t in cli_json(workdir, "status")["tables"].values()] == [1]
    (confirmed,) = query(source_dsn, "SELECT confirmed_flush_lsn < %s::pg_lsn FROM pg_replication_slots",
                         (big_lsn,))[0]
    assert confirmed  # the slot still holds the big change: raising the limit loses nothing


def capture_under_traffic(workdir: Path, source_dsn: str, disrupt) -> tuple[list[int], str]:  # type: ignore[no-untyped-def]
    """Run the daemon while one connection commits 3-row transactions (id = txn * 10 + part), call
    `disrupt()` after 4 s, then stop both: the transactions committed, in order, and the daemon's
    stderr (it must have exited 0 on SIGTERM)."""
    daemon = spawn(workdir, "capture")
    wait_running(workdir, daemon)  # the disruption hits capture, not the daemon's start
    committed: list[int] = []
    stop_writing = threading.Event()

    def writer() -> None:  # one connection: commit order is txn order
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            txn = 0
            while not stop_writing.is_set():
                txn += 1
                with conn.transaction():
                    for part in range(3):
                        conn.execute("INSERT INTO t VALUES (%s, %s, %s)", (txn * 10 + part, txn, part))
                committed.append(txn)
                time.sleep(0.02)

    thread = threading.Thread(target=writer)
    try:
        thread.start()
        time.sleep(4)
        disrupt()
        stop_writing.set()
        thread.join(30)
        assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
    finally:
        stop_writing.set()
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, err
    return committed, err


@pytest.mark.slow
def test_broker_outage_under_live_traffic(private_kafka, source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, txn integer, part integer)")
    use_kafka(write_config(workdir, source_dsn), private_kafka.bootstrap)
    cli(workdir, "start", "--set-replica-identity")

    def outage() -> None:
        private_kafka.stop()
        time.sleep(10)
        private_kafka.start()
        time.sleep(8)

    committed, err = capture_under_traffic(workdir, source_dsn, outage)
    assert "change log unavailable" in err  # the daemon saw the outage and waited
    cli(workdir, "capture", "--until", "current")
    got = logged(workdir)
    assert len(committed) > 100
    assert [cs[0].new["txn"] for _, _, cs in got] == committed  # every transaction once, in order
    assert all([(c.new["id"], c.new["part"]) for c in cs] == [(cs[0].new["txn"] * 10 + p, p) for p in range(3)]
               for _, _, cs in got)
    assert sorted(marker_copies(workdir)) == [lsn for _, lsn, _ in got]


def _kafka_logged_changes(workdir: Path) -> list[tuple[int, object]]:
    return [(xid, c) for xid, _, cs in logged(workdir) for c in cs]


def _on_kafka(monkeypatch, module, bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    """Run another module's CLI test as written, with its config pointed at a Kafka topic."""

    def kafka_write_config(workdir: Path, dsn: str, **kw: object) -> Path:
        return use_kafka(write_config(workdir, dsn, **kw), bootstrap)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "write_config", kafka_write_config)
    if hasattr(module, "logged_changes"):
        monkeypatch.setattr(module, "logged_changes", _kafka_logged_changes)


def test_shop_end_to_end_with_kafka_log(kafka_broker, source_dsn, target_dsn, workdir, monkeypatch):
    """The replay issue's shop scenario, word for word, with the log in Kafka instead of SQLite."""
    from tests import test_replay_shop as shop_test

    _on_kafka(monkeypatch, shop_test, kafka_broker.bootstrap)
    shop_test.test_shop_replay_carries_every_production_write(source_dsn, target_dsn, workdir)
    assert 'backend = "kafka"' in (workdir / "pgcarry.toml").read_text()
    assert not list(workdir.glob("*.db"))


@pytest.mark.slow
def test_kill_9_five_times_with_kafka_log(kafka_broker, source_dsn, workdir, monkeypatch):
    from tests import test_capture_daemon as daemon_test

    _on_kafka(monkeypatch, daemon_test, kafka_broker.bootstrap)
    daemon_test.test_kill_9_five_times_loses_nothing_and_stores_nothing_twice(source_dsn, workdir)
    assert not list(workdir.glob("*.db"))


def test_sigterm_and_second_daemon_with_kafka_log(kafka_broker, source_dsn, workdir, monkeypatch):
    from tests import test_capture_daemon as daemon_test

    _on_kafka(monkeypatch, daemon_test, kafka_broker.bootstrap)
    daemon_test.test_sigterm_finishes_durably_and_second_daemon_is_refused(source_dsn, workdir)
    assert not list(workdir.glob("*.db"))


@pytest.mark.slow
def test_500k_row_transaction_with_kafka_log(kafka_broker, source_dsn, workdir, monkeypatch):
    from tests import test_capture_daemon as daemon_test

    _on_kafka(monkeypatch, daemon_test, kafka_broker.bootstrap)
    daemon_test.test_one_big_transaction_is_not_held_in_memory(source_dsn, workdir)
    assert not list(workdir.glob("*.db"))
