"""The SQLite log's compact format: any batching of any transactions reads back byte for byte, a
damaged chunk is never read as changes, and a log of another format is refused, never misread."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgcarry.changelog import chunk
from pgcarry.changelog import sqlite as sqlite_mod
from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.errors import LogError
from pgcarry.schemas.change import Change
from pgcarry.schemas.lsn import Lsn

# any text wal2json could send (it is UTF-8: no lone surrogates), and names that need quoting
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_name = st.sampled_from(["t", "T y", 'we"ird', "한국어", "a.b,c"])
_change = st.tuples(st.sampled_from("IUDT"), _name, _name, _text)
_txn = st.tuples(st.lists(_change, max_size=12), st.booleans())  # (changes, sync in the middle)


def _lsn(i: int, seq: int) -> int:
    """A change's LSN; in odd transactions they run backwards (negative deltas in a chunk)."""
    return 1000 * i + 1 + (seq if i % 2 == 0 else 900 - seq)


def _write(log: SQLiteLog, i: int, changes: list, sync_mid: bool, *, commit: bool = True) -> None:
    log.begin(i, Lsn(1000 * (i + 1)))
    for seq, (action, schema, table, raw) in enumerate(changes):
        log.append(Change(seq, Lsn(_lsn(i, seq)), action, schema, table, raw))
        if sync_mid and seq == len(changes) // 2:
            log.sync()
    if commit:
        log.commit(f"2026-01-01 00:00:00.{i:06d}+00")


def _expected(txns: list) -> list:
    out = []
    for i, (changes, _) in enumerate(txns):
        if changes:
            out.append((i, 1000 * (i + 1), [(seq, _lsn(i, seq), *c) for seq, c in enumerate(changes)]))
    return out


_ONE = [("I", "public", "t", "{}")]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(txns=st.lists(_txn, min_size=1, max_size=25), crash_at=st.integers(0, 30),
       batch=st.sampled_from([1, 3, 7, 2000]))
# the crash inside a transaction that shares its group commit with complete ones
@example(txns=[(_ONE, False), (_ONE, False), (_ONE * 3, False)], crash_at=2, batch=2000)
def test_any_batching_and_crash_reads_back_byte_for_byte(monkeypatch, txns, crash_at, batch):
    monkeypatch.setattr(sqlite_mod, "BATCH_ROWS", batch)
    monkeypatch.setattr(sqlite_mod, "SMALL_TXN", 4)  # larger transactions come as lazy iterators
    monkeypatch.setattr(chunk, "TRAIN_SAMPLES", 8)  # a dictionary early (or zstd finds too little)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.db"
        log = SQLiteLog(path, create=True)
        for i, (changes, sync_mid) in enumerate(txns):
            if i == crash_at:  # the daemon dies inside this transaction, after a group commit
                _write(log, i, changes, True, commit=False)
                log.sync()
                log.close()
                log = SQLiteLog(path)
                for j in range(i):  # the slot re-sends from before: stored once
                    assert log.begin(j, Lsn(1000 * (j + 1))) is not bool(txns[j][0])
                    log.commit(None)
            _write(log, i, changes, sync_mid)
            if i % 3 == 0:
                log.sync()
        log.sync()
        log.close()

        log = SQLiteLog(path, readonly=True)
        log.check_integrity()
        got = [(t.xid, t.commit_lsn.value, [(c.seq, c.lsn.value, c.action, c.schema, c.table, c.raw)
                                            for c in t.changes]) for t in log.transactions()]
        assert got == _expected(txns)
        flat = [(commit, lsn, a, s, t, raw) for _, commit, cs in got for _, lsn, a, s, t, raw in cs]
        assert list(log.raw_changes()) == flat
        after = Lsn(1000 * (len(txns) // 2 + 1))
        assert list(log.raw_changes(after)) == [r for r in flat if r[0] > after.value]
        assert sum(sum(c.values()) for c in log.summary().tables.values()) == len(flat)
        log.close()


@pytest.mark.parametrize("batch", [1, 2, 2000])
def test_stream_restarted_inside_a_transaction_stores_it_once(tmp_path, monkeypatch, batch):
    """The source went away mid-transaction and the daemon re-reads the slot with the log open:
    what it had of the open transaction is dropped, the re-sent copy stored whole, once."""
    monkeypatch.setattr(sqlite_mod, "BATCH_ROWS", batch)
    log = SQLiteLog(tmp_path / "log.db", create=True)
    one, two = [("I", "public", "t", f"one {k}") for k in range(2)], [
        ("U", "public", "t", f"two {k}") for k in range(3)]
    _write(log, 0, one, False)
    _write(log, 1, two, True, commit=False)  # a group commit in the middle, then the stream breaks
    assert log.begin(0, Lsn(1000)) is False  # re-sent from the slot's confirmed position
    log.commit(None)
    _write(log, 1, two, False)
    log.sync()
    log.check_integrity()
    assert [(t.xid, [c.raw for c in t.changes]) for t in log.transactions()] == [
        (0, ["one 0", "one 1"]), (1, ["two 0", "two 1", "two 2"])]
    assert log.summary().tables["public.t"] == {"insert": 2, "update": 3, "delete": 0, "truncate": 0}
    log.close()


def _slow_stream(path: Path, txns: int, first: int = 0) -> None:
    """One small transaction per group commit, as a live daemon on a quiet source writes them."""
    log = SQLiteLog(path, create=not path.exists())
    for i in range(first, first + txns):
        _write(log, i, [(a, "public", "orders", json.dumps(
            {"action": a, "xid": 700 + i, "lsn": f"0/{i * 64:X}", "schema": "public", "table": "orders",
             "columns": [{"name": "id", "type": "integer", "value": i * 3 + k},
                         {"name": "status", "type": "text", "value": ["new", "paid", "shipped"][k]},
                         {"name": "total", "type": "numeric(12,2)", "value": f"{i % 997}.{k}9"},
                         {"name": "created_at", "type": "timestamp with time zone",
                          "value": f"2026-01-0{1 + i % 9} 12:{i % 60:02d}:0{k}+00"}]}))
            for k, a in enumerate("IUD")], False)
        log.sync()
    log.close()


def test_dictionary_keeps_small_chunks_small_and_survives_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(chunk, "TRAIN_SAMPLES", 10**9)
    monkeypatch.setattr(chunk, "TRAIN_AFTER", 10**9)
    _slow_stream(tmp_path / "plain.db", 600)
    monkeypatch.setattr(chunk, "TRAIN_SAMPLES", 1000)
    monkeypatch.setattr(chunk, "TRAIN_AFTER", 1000)  # one relation: 200 samples by then
    _slow_stream(tmp_path / "dict.db", 400)
    _slow_stream(tmp_path / "dict.db", 200, first=400)  # reopened: the stored dictionary goes on
    plain, small = (SQLiteLog(tmp_path / f"{n}.db", readonly=True) for n in ("plain", "dict"))
    assert list(small.raw_changes()) == list(plain.raw_changes())
    small.check_integrity()
    rows = small._db.execute("SELECT dict, count(*), sum(n) FROM chunks GROUP BY dict").fetchall()
    assert rows == [(0, 333, 999), (1, 267, 801)]  # trained once, at the 1000th change
    assert small._db.execute("SELECT count(*) FROM dicts").fetchone() == (1,)
    assert small.raw_bytes() == plain.raw_bytes()
    assert plain._db.execute("SELECT count(*) FROM dicts").fetchone() == (0,)
    size = "SELECT sum(length(data)) FROM chunks WHERE id > 333"
    assert small._db.execute(size).fetchone()[0] < 0.6 * plain._db.execute(size).fetchone()[0]
    small.close()
    plain.close()
    _edit(tmp_path / "dict.db", "DELETE FROM dicts")
    log = SQLiteLog(tmp_path / "dict.db", readonly=True)
    with pytest.raises(LogError, match="is damaged: chunk 334: dictionary 1 is missing"):
        log.check_integrity()
    with pytest.raises(LogError, match="dictionary 1 is missing"):
        list(log.raw_changes())
    log.close()


def _two_txns(path: Path) -> None:
    log = SQLiteLog(path, create=True)
    for i in range(2):
        _write(log, i, [("I", "public", "t", json.dumps({"i": i, "pad": "x" * 500 * (k + 1)}))
                        for k in range(3)], False)
        log.sync()
    log.close()


def _edit(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql)
    db.close()


def test_damaged_chunk_is_never_read(tmp_path):
    path = tmp_path / "log.db"
    _two_txns(path)
    _edit(path, "UPDATE chunks SET data = CAST(substr(data, 1, 30) || x'00ff00ff' || substr(data, 35) "
                "AS BLOB) WHERE id = 2")
    log = SQLiteLog(path, readonly=True)
    with pytest.raises(LogError, match="is damaged: chunk 2: .*checksum"):
        log.check_integrity()
    with pytest.raises(LogError, match="is damaged: chunk 2"):
        list(log.raw_changes())
    assert [r[0] for r in log.raw_changes(after=Lsn(2000))] == []  # chunk 2 is never opened
    with pytest.raises(LogError, match="is damaged: chunk 2"):
        [list(t.changes) for t in log.transactions()]
    log.close()

    _edit(path, "DELETE FROM chunks WHERE id = 2")  # a chunk gone without a trace
    log = SQLiteLog(path, readonly=True)
    with pytest.raises(LogError, match="is damaged: 6 changes committed, 3 stored"):
        log.check_integrity()
    with pytest.raises(LogError, match="commit LSN 0/7D0 has 3 changes, 0 found"):
        list(log.raw_changes())
    log.close()


# the format-1 layout, as pgcarry wrote it before the compact log (one row per change)
_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE txns (id INTEGER PRIMARY KEY, xid INTEGER NOT NULL, commit_lsn INTEGER NOT NULL UNIQUE,
    complete INTEGER NOT NULL DEFAULT 0, commit_time TEXT, n_changes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE changes (txn INTEGER NOT NULL, seq INTEGER NOT NULL, lsn INTEGER NOT NULL,
    action TEXT NOT NULL, schema_name TEXT NOT NULL, table_name TEXT NOT NULL, raw TEXT NOT NULL,
    PRIMARY KEY (txn, seq)) WITHOUT ROWID;
CREATE TABLE counts (relation TEXT NOT NULL, action TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (relation, action)) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO txns VALUES (1, 7, 4096, 1, '2026-01-01 00:00:00+00', 1);
INSERT INTO changes VALUES (1, 0, 4000, 'I', 'public', 't', '{"action":"I"}');
INSERT INTO counts VALUES ('public.t', 'insert', 1);
"""


@pytest.mark.parametrize("readonly", [True, False])
def test_format_1_log_is_refused_with_what_to_do(tmp_path, readonly):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_V1)
    db.close()
    tables = "SELECT group_concat(name) FROM sqlite_master"
    before = sqlite3.connect(path).execute(tables).fetchone()
    with pytest.raises(LogError) as e:
        SQLiteLog(path, readonly=readonly)
    assert e.value.exit_code == 3
    assert "has format 1 (one row per change" in e.value.message
    assert f"this pgcarry reads format {sqlite_mod.SCHEMA_VERSION} only" in e.value.message
    assert "with the pgcarry version that started it, or take a new T0" in (e.value.hint or "")
    assert sqlite3.connect(path).execute(tables).fetchone() == before  # nothing created in it


def test_newer_format_is_refused_and_format_1_readers_cannot_misread_format_2(tmp_path):
    path = tmp_path / "log.db"
    _two_txns(path)
    db = sqlite3.connect(path)
    # what format 1's reader ran: a format-2 file has no `changes` table, so it fails, never reads 0 rows
    with pytest.raises(sqlite3.OperationalError, match="no such table: changes"):
        db.execute("SELECT t.commit_lsn, c.raw FROM txns t JOIN changes c ON c.txn = t.id").fetchall()
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    for readonly in (True, False):
        with pytest.raises(LogError, match="has format 3, this pgcarry reads format 2"):
            SQLiteLog(path, readonly=readonly)


def test_too_few_samples_train_no_dictionary():
    """zstd's trainer crashes the process on a few bytes of samples: such a set is not trained
    on (run in a child process, so a crash fails this test instead of the suite)."""
    code = ("from pgcarry.changelog.chunk import Packer; p = Packer(None); "
            "print(p.train(1, [b'a'] * 9), p.train(1, [b'x' * 40] * 99), p.dict_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "None None 0\n"), out.stderr
