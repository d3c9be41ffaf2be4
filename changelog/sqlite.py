"""SQLiteLog: the embedded change log, one file in WAL mode with synchronous=FULL, mode 0600.

Changes are inserted as they stream in (bounded memory for any transaction size); a transaction
row is marked complete at its commit, and only complete rows are ever read. Empty transactions are
not stored, but they still move the durable position.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pgcarry.changelog.base import ChangeLog, LogSummary, RawChange
from pgcarry.errors import LogError, LogFullError
from pgcarry.schemas.change import ACTION_NAMES, Change, Transaction
from pgcarry.schemas.lsn import Lsn

SCHEMA_VERSION = 1
BATCH_ROWS = 2000  # changes buffered before one executemany

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txns (
    id INTEGER PRIMARY KEY,
    xid INTEGER NOT NULL,
    commit_lsn INTEGER NOT NULL UNIQUE,
    complete INTEGER NOT NULL DEFAULT 0,
    commit_time TEXT,
    n_changes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS changes (
    txn INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    lsn INTEGER NOT NULL,
    action TEXT NOT NULL,
    schema_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    raw TEXT NOT NULL,
    PRIMARY KEY (txn, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts (
    relation TEXT NOT NULL,
    action TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (relation, action)
) WITHOUT ROWID;
"""


_FULL_CODES = (10, 13)  # SQLITE_IOERR (ENOSPC at write or fsync), SQLITE_FULL


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A disk-full or I/O error while writing becomes LogFullError after a rollback."""

    @functools.wraps(fn)
    def wrapper(self: SQLiteLog, *args: Any) -> Any:
        try:
            return fn(self, *args)
        except sqlite3.OperationalError as e:
            if (getattr(e, "sqlite_errorcode", 0) & 0xFF) not in _FULL_CODES:
                raise
            raise self._full(e) from None

    return wrapper


def _create_private(path: Path) -> None:
    """Create the log file (and its folder) readable by the owner only: it holds customer data."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


class SQLiteLog(ChangeLog):
    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise LogError(
                    f"change log {self.path} does not exist",
                    hint="run `pgcarry start` first, or check [log] path in the config",
                )
            _create_private(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            if not readonly:
                self._db.executescript(_DDL)
                self._check_version()
            self._db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log {self.path} is damaged or not a pgcarry log: {e}",
                           hint="nothing was applied; restore the log file from a copy") from None
        self._txn_id: int | None = None
        self._skip = False
        self._rows: list[tuple[Any, ...]] = []
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._n = 0
        self._in_write = False
        self._open: Lsn | None = None
        self._pending_commit: Lsn | None = None
        self._durable: Lsn | None = self._max_commit()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),)
            )
        elif json.loads(row[0]) != SCHEMA_VERSION:
            raise LogError(f"change log {self.path} has format {row[0]}, expected {SCHEMA_VERSION}")

    def _max_commit(self) -> Lsn | None:
        row = self._db.execute("SELECT max(commit_lsn) FROM txns WHERE complete = 1").fetchone()
        return Lsn(row[0]) if row and row[0] is not None else None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # -- writing -----------------------------------------------------------------------------
    def _full(self, e: sqlite3.OperationalError) -> LogFullError:
        """Roll back everything since the last sync(): the slot re-sends it."""
        try:
            if self._in_write:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._in_write, self._rows, self._txn_id, self._skip = False, [], None, False
        self._open = self._pending_commit = None
        self._counts.clear()
        return LogFullError(f"cannot write the change log {self.path}: {e}",
                            hint="free space on its filesystem; capture resumes by itself")

    def _write(self) -> None:
        if not self._in_write:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_write = True

    def _flush_rows(self) -> None:
        if self._rows:
            self._write()  # never autocommit: one fsync per row would crawl
            self._db.executemany("INSERT INTO changes VALUES (?,?,?,?,?,?,?)", self._rows)
            self._rows.clear()

    @_guarded
    def begin(self, xid: int, commit_lsn: Lsn) -> bool:
        self._write()
        row = self._db.execute(
            "SELECT id, complete FROM txns WHERE commit_lsn = ?", (commit_lsn.value,)
        ).fetchone()
        self._open = commit_lsn
        if row is not None and row[1]:
            self._skip, self._txn_id = True, None
            return False
        if row is not None:  # an incomplete copy left by a crash: start it over
            self._db.execute("DELETE FROM changes WHERE txn = ?", (row[0],))
            self._db.execute("DELETE FROM txns WHERE id = ?", (row[0],))
        cur = self._db.execute(
            "INSERT INTO txns (xid, commit_lsn) VALUES (?, ?)", (xid, commit_lsn.value)
        )
        self._txn_id, self._skip, self._n = cur.lastrowid, False, 0
        self._counts.clear()
        return True

    @_guarded
    def append(self, change: Change) -> None:
        if self._skip:
            return
        if self._txn_id is None:
            raise LogError("change outside a transaction", lsn=change.lsn)
        self._rows.append(
            (self._txn_id, change.seq, change.lsn.value, change.action, change.schema,
             change.table, change.raw)
        )
        self._counts[(change.schema, change.table, change.action)] += 1
        self._n += 1
        if len(self._rows) >= BATCH_ROWS:
            self._flush_rows()

    @_guarded
    def commit(self, commit_time: str | None) -> None:
        if self._open is None:
            raise LogError("commit outside a transaction")
        if not self._skip:
            self._write()
            self._flush_rows()
            if self._n == 0:
                self._db.execute("DELETE FROM txns WHERE id = ?", (self._txn_id,))
            else:
                self._db.execute(
                    "UPDATE txns SET complete = 1, commit_time = ?, n_changes = ? WHERE id = ?",
                    (commit_time, self._n, self._txn_id),
                )
                self._db.executemany(
                    "INSERT INTO counts VALUES (?, ?, ?) "
                    "ON CONFLICT (relation, action) DO UPDATE SET n = n + excluded.n",
                    [(f"{sch}.{tbl}", ACTION_NAMES.get(a, a), n)
                     for (sch, tbl, a), n in self._counts.items()],
                )
        self._pending_commit, self._open = self._open, None
        self._txn_id, self._skip = None, False
        self._counts.clear()

    @_guarded
    def sync(self) -> Lsn | None:
        if self._in_write:
            self._flush_rows()
            self._db.execute("COMMIT")  # WAL + synchronous=FULL: fsync'd before this returns
            self._in_write = False
            if self._pending_commit is not None:
                self._durable = self._pending_commit
                self._pending_commit = None
        return self._durable

    # -- reading -----------------------------------------------------------------------------
    def check_integrity(self) -> None:
        try:
            bad = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as e:
            bad = [str(e)]
        if bad != ["ok"]:
            raise LogError(f"change log {self.path} is damaged: {'; '.join(bad)}",
                           hint="nothing was applied; restore the log file from a copy, or take a new T0")

    def transactions(self, after: Lsn | None = None) -> Iterator[Transaction]:
        floor = after.value if after is not None else -1
        reader = sqlite3.connect(self.path, isolation_level=None)
        try:
            reader.execute("BEGIN")  # one consistent snapshot for the whole read
            txns = reader.execute(
                "SELECT id, xid, commit_lsn, commit_time, n_changes FROM txns "
                "WHERE complete = 1 AND commit_lsn > ? ORDER BY commit_lsn",
                (floor,),
            )
            for tid, xid, commit, ctime, n in txns:
                yield Transaction(xid, Lsn(commit), ctime, n, self._changes(reader, tid))
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log {self.path} cannot be read: {e}",
                           hint="nothing was applied; restore the log file from a copy") from None
        finally:
            reader.close()

    def raw_changes(self, after: Lsn | None = None) -> Iterator[RawChange]:
        """One streaming query over one snapshot: (commit LSN, LSN, action, schema, table, raw)."""
        reader = sqlite3.connect(self.path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            yield from reader.execute(
                "SELECT t.commit_lsn, c.lsn, c.action, c.schema_name, c.table_name, c.raw "
                "FROM txns t JOIN changes c ON c.txn = t.id WHERE t.complete = 1 AND t.commit_lsn > ? "
                "ORDER BY t.commit_lsn, c.seq", (after.value if after is not None else -1,))
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log {self.path} cannot be read: {e}",
                           hint="nothing was applied; restore the log file from a copy") from None
        finally:
            reader.close()

    @staticmethod
    def _changes(reader: sqlite3.Connection, tid: int) -> Iterator[Change]:
        cur = reader.execute(
            "SELECT seq, lsn, action, schema_name, table_name, raw FROM changes "
            "WHERE txn = ? ORDER BY seq",
            (tid,),
        )
        try:
            for seq, lsn, action, schema, table, raw in cur:
                yield Change(seq, Lsn(lsn), action, schema, table, raw)
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log cannot be read: {e}",
                           hint="nothing was applied; restore the log file from a copy") from None

    def summary(self) -> LogSummary:
        s = LogSummary()
        n, first, last, lsn = self._db.execute(
            "SELECT count(*), min(commit_time), max(commit_time), max(commit_lsn) FROM txns "
            "WHERE complete = 1"
        ).fetchone()
        s.transactions, s.first_commit_time, s.last_commit_time = n, first, last
        s.last_commit_lsn = Lsn(lsn) if lsn is not None else None
        for rel, action, count in self._db.execute("SELECT relation, action, n FROM counts"):
            s.tables.setdefault(rel, {a: 0 for a in ACTION_NAMES.values()})[action] = count
        return s

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

    # -- manifest and state --------------------------------------------------------------------
    def get_state(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_state(self, key: str, value: Any) -> None:
        # Outside a write batch this autocommits (durable on return); inside, it is durable
        # with the batch's sync().
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def close(self) -> None:
        if self._in_write:
            self._db.execute("ROLLBACK")
            self._in_write = False
        self._db.close()
