"""The SQLite change log on its own: de-duplication, incomplete tails, counts, file mode."""

import json
import os
import stat

import pytest

from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.errors import LogError
from pgcarry.schemas.change import Change
from pgcarry.schemas.lsn import Lsn


def change(seq: int, lsn: int, action: str = "I", table: str = "t", **cols) -> Change:
    raw = json.dumps({"action": action, "schema": "public", "table": table,
                      "columns": [{"name": k, "type": "integer", "value": v} for k, v in cols.items()]})
    return Change(seq, Lsn(lsn), action, "public", table, raw)


def write_txn(log: SQLiteLog, xid: int, commit: int, n: int, *, close: bool = True) -> bool:
    fresh = log.begin(xid, Lsn(commit))
    for i in range(n):
        log.append(change(i, commit - 100 + i, id=xid * 1000 + i))
    if close:
        log.commit(f"2026-01-01 00:00:{xid:02d}+00")
    return fresh


def test_file_is_private_and_durable_position(tmp_path):
    path = tmp_path / "sub" / "log.db"
    log = SQLiteLog(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    write_txn(log, 1, 1000, 3)
    assert log.sync() == Lsn(1000)
    write_txn(log, 2, 2000, 0)  # empty transaction: not stored, still moves the position
    assert log.sync() == Lsn(2000)
    log.close()
    for p in tmp_path.joinpath("sub").iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_duplicates_stored_once_and_incomplete_tail_never_read(tmp_path):
    log = SQLiteLog(tmp_path / "log.db", create=True)
    write_txn(log, 1, 1000, 2)
    write_txn(log, 2, 2000, 2)
    write_txn(log, 3, 3000, 5, close=False)  # crash before the commit arrived
    log.sync()
    log.close()

    log = SQLiteLog(tmp_path / "log.db")
    assert [t.commit_lsn.value for t in log.transactions()] == [1000, 2000]
    # the stream restarts from the slot: txn 2 again (duplicate), then txn 3 whole
    assert write_txn(log, 2, 2000, 2) is False
    assert write_txn(log, 3, 3000, 4) is True
    log.sync()
    txns = list(log.transactions())
    assert [(t.xid, t.commit_lsn.value, t.n_changes) for t in txns] == [(1, 1000, 2), (2, 2000, 2), (3, 3000, 4)]
    assert [c.new["id"] for t in log.transactions() for c in t.changes] == [
        1000, 1001, 2000, 2001, 3000, 3001, 3002, 3003]
    assert [t.xid for t in log.transactions(after=Lsn(1000))] == [2, 3]
    summary = log.summary()
    assert summary.transactions == 3 and summary.last_commit_lsn == Lsn(3000)
    assert summary.tables == {"public.t": {"insert": 8, "update": 0, "delete": 0, "truncate": 0}}
    log.close()


def test_state_and_missing_or_foreign_files(tmp_path):
    log = SQLiteLog(tmp_path / "log.db", create=True)
    log.set_state("cutover", {"phase": "drain", "done": ["fence"]})
    log.close()
    assert SQLiteLog(tmp_path / "log.db").get_state("cutover") == {"phase": "drain", "done": ["fence"]}
    with pytest.raises(LogError, match="does not exist"):
        SQLiteLog(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LogError, match="is damaged or not a pgcarry log"):
        SQLiteLog(tmp_path / "junk.db")


def test_lock_allows_one_daemon(tmp_path):
    log = SQLiteLog(tmp_path / "log.db", create=True)
    with log.lock():
        with pytest.raises(LogError, match="another capture daemon"):
            log.lock().acquire()
    log.lock().acquire().release()
    log.close()
