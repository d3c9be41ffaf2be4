"""SQLiteLog: the embedded change log, one file in WAL mode with synchronous=FULL, mode 0600.

Changes are buffered as they stream in and stored as compressed chunks (changelog/chunk.py) of up
to BATCH_ROWS changes, compressed on a worker thread while the daemon reads on (bounded memory for
any transaction size); a transaction row is marked complete at its commit, and only complete rows
are ever read. Empty transactions are not stored, but they still move the durable position.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pgcarry.changelog import chunk
from pgcarry.changelog.base import ChangeLog, LogSummary, RawChange
from pgcarry.changelog.chunk_reader import DAMAGED_HINT as _DAMAGED_HINT
from pgcarry.changelog.chunk_reader import ChunkReader, Dictionaries
from pgcarry.errors import LogError, LogFullError
from pgcarry.schemas.change import ACTION_NAMES, Change, Transaction
from pgcarry.schemas.lsn import Lsn

SCHEMA_VERSION = 2  # 1: one row per change, raw JSON as text; 2: compressed chunks
BATCH_ROWS = 2000  # changes per chunk at most ...
BATCH_CHARS = 4 << 20  # ... and raw JSON characters (big rows make small chunks)
MAX_PENDING = 2  # chunks being compressed at once: bounds the memory ahead of the disk
SMALL_TXN = 1000  # transactions() hands smaller transactions' changes over as a list

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    xid INTEGER NOT NULL,
    commit_lsn INTEGER NOT NULL UNIQUE,
    complete INTEGER NOT NULL DEFAULT 0,
    commit_time TEXT,
    n_changes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    first_txn INTEGER NOT NULL,
    last_txn INTEGER NOT NULL,
    n INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL,
    dict INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dicts (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_last_txn ON chunks (last_txn);
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


def _version_error(path: Path, found: Any) -> LogError:
    """Refuse a log of another format with what to do; never guess at its layout."""
    if found == 1:
        return LogError(
            f"change log {path} has format 1 (one row per change, written by pgcarry before the "
            f"compact log); this pgcarry reads format {SCHEMA_VERSION} only",
            hint="finish this capture's replay or cutover with the pgcarry version that started it, "
                 "or take a new T0 into a new [log] path")
    return LogError(f"change log {path} has format {found}, this pgcarry reads format {SCHEMA_VERSION}",
                    hint="use the pgcarry version that wrote this log")


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
            self._check_version(readonly)
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log {self.path} is damaged or not a pgcarry log: {e}",
                           hint="nothing was applied; restore the log file from a copy") from None
        self._txn_id: int | None = None
        self._skip = False
        self._rows: list[chunk.Entry] = []
        self._chars = 0  # raw characters in _rows
        self._open_from: int | None = None  # where the open transaction starts in _rows
        self._pending: deque[Future[Any]] = deque()  # chunks and dictionaries, in order
        self._worker: ThreadPoolExecutor | None = None
        self._packer: chunk.Packer | None = None  # made at the first write, from the stored state
        self._sampler: chunk.Sampler | None = None  # until the dictionary is trained
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)  # the open transaction
        self._batch_counts: dict[tuple[str, str, str], int] = defaultdict(int)  # written at sync()
        self._high: int | None = None  # highest commit LSN in txns: above it, begin() need not look
        self._n = 0
        self._in_write = False
        self._open: Lsn | None = None
        self._pending_commit: Lsn | None = None
        self._durable: Lsn | None = self._max_commit()

    def _check_version(self, readonly: bool) -> None:
        """A log of another format is refused before anything is read or written."""
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = self._db.execute(
            "SELECT value FROM meta WHERE key='schema_version'").fetchone() if has_meta else None
        if row is not None and json.loads(row[0]) != SCHEMA_VERSION:
            raise _version_error(self.path, json.loads(row[0]))
        if readonly:
            if row is None:  # a file without the log's tables is not a pgcarry log
                self._db.execute("SELECT 1 FROM meta, txns, chunks LIMIT 0")
            return
        self._db.executescript(_DDL)
        if row is None:
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),))

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
        self._chars, self._open_from = 0, None
        self._pending.clear()  # results not stored yet: dropped with the rest
        self._packer = self._sampler = None  # back to what is stored
        self._open = self._pending_commit = self._high = None
        self._counts.clear()
        self._batch_counts.clear()
        return LogFullError(f"cannot write the change log {self.path}: {e}",
                            hint="free space on its filesystem; capture resumes by itself")

    def _write(self) -> None:
        if not self._in_write:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_write = True

    def _flush_rows(self) -> None:
        """Hand the buffered changes to the worker as chunks. The open transaction's changes get
        a chunk of their own: if its commit never arrives, begin() drops them without touching a
        chunk of complete transactions."""
        rows, cut = self._rows, self._open_from
        if not rows:
            return
        self._rows, self._chars = [], 0
        self._open_from = None if cut is None else 0
        for part in [rows] if not cut else [p for p in (rows[:cut], rows[cut:]) if p]:
            self._submit(self._packing().pack, part)

    def _packing(self) -> chunk.Packer:
        if self._packer is None:
            stored = self._db.execute("SELECT id, data FROM dicts ORDER BY id DESC LIMIT 1").fetchone()
            self._packer = chunk.Packer(stored)
            self._sampler = None if stored else chunk.Sampler()
        return self._packer

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="pgcarry-chunks")
        self._pending.append(self._worker.submit(fn, *args))
        while len(self._pending) > MAX_PENDING:
            self._store(self._pending.popleft().result())

    def _train(self) -> None:
        """Train the dictionary on the worker: the chunks packed after it use it."""
        assert self._sampler is not None
        samples, self._sampler = self._sampler.samples, None
        (next_id,) = self._db.execute("SELECT coalesce(max(id), 0) + 1 FROM dicts").fetchone()
        self._submit(self._packing().train, next_id, samples)

    def _store(self, done: chunk.Packed | chunk.Dictionary | None) -> None:
        self._write()  # never autocommit: one fsync per chunk would crawl
        if isinstance(done, chunk.Packed):
            self._db.execute("INSERT INTO chunks (first_txn, last_txn, n, raw_bytes, dict, data) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (done.first_txn, done.last_txn, done.n, done.raw_bytes, done.dict_id, done.data))
        elif done is not None:  # stored before the first chunk that uses it
            self._db.execute("INSERT INTO dicts VALUES (?, ?)", done)
        else:
            self._sampler = chunk.Sampler()  # too little to learn from: sample again

    @_guarded
    def begin(self, xid: int, commit_lsn: Lsn) -> bool:
        self._write()
        if self._txn_id is not None:  # the open transaction never committed: the stream restarted
            self._drop_open()
        self._open = commit_lsn
        if self._high is None:
            (high,) = self._db.execute("SELECT coalesce(max(commit_lsn), -1) FROM txns").fetchone()
            self._high = high
        row = None if commit_lsn.value > self._high else self._db.execute(
            "SELECT id, complete FROM txns WHERE commit_lsn = ?", (commit_lsn.value,)).fetchone()
        if row is not None and row[1]:
            self._skip, self._txn_id = True, None
            return False
        if row is not None:  # an incomplete copy left by a crash (the log's tail): start it over
            self._db.execute("DELETE FROM chunks WHERE first_txn = ? AND last_txn = ?", (row[0], row[0]))
            self._db.execute("DELETE FROM txns WHERE id = ?", (row[0],))
        cur = self._db.execute(
            "INSERT INTO txns (xid, commit_lsn) VALUES (?, ?)", (xid, commit_lsn.value)
        )
        self._high = max(self._high, commit_lsn.value)
        self._txn_id, self._skip, self._n = cur.lastrowid, False, 0
        self._open_from = len(self._rows)
        self._counts.clear()
        self._packing()
        return True

    def _drop_open(self) -> None:
        """Forget what is buffered of the open transaction and store what is on the worker (the
        transaction's own chunks): its begin() again finds it incomplete and drops it whole."""
        del self._rows[self._open_from or 0:]
        self._chars = sum(len(r[6]) for r in self._rows)
        while self._pending:
            self._store(self._pending.popleft().result())
        self._txn_id, self._open_from = None, None

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
        self._chars += len(change.raw)
        self._counts[(change.schema, change.table, change.action)] += 1
        self._n += 1
        if self._sampler is not None and self._sampler.add(change.schema, change.table, change.raw):
            self._train()
        if len(self._rows) >= BATCH_ROWS or self._chars >= BATCH_CHARS:
            self._flush_rows()

    @_guarded
    def commit(self, commit_time: str | None) -> None:
        if self._open is None:
            raise LogError("commit outside a transaction")
        if not self._skip:
            self._write()
            if self._n == 0:
                self._db.execute("DELETE FROM txns WHERE id = ?", (self._txn_id,))
            else:
                self._db.execute(
                    "UPDATE txns SET complete = 1, commit_time = ?, n_changes = ? WHERE id = ?",
                    (commit_time, self._n, self._txn_id),
                )
                for key, n in self._counts.items():
                    self._batch_counts[key] += n
        self._pending_commit, self._open = self._open, None
        self._txn_id, self._skip, self._open_from = None, False, None
        self._counts.clear()

    @_guarded
    def sync(self) -> Lsn | None:
        if self._in_write:
            self._flush_rows()
            while self._pending:
                self._store(self._pending.popleft().result())
            self._db.executemany(
                "INSERT INTO counts VALUES (?, ?, ?) "
                "ON CONFLICT (relation, action) DO UPDATE SET n = n + excluded.n",
                [(f"{sch}.{tbl}", ACTION_NAMES.get(a, a), n)
                 for (sch, tbl, a), n in self._batch_counts.items()])
            self._batch_counts.clear()
            self._db.execute("COMMIT")  # WAL + synchronous=FULL: fsync'd before this returns
            self._in_write = False
            if self._pending_commit is not None:
                self._durable = self._pending_commit
                self._pending_commit = None
        return self._durable

    # -- reading -----------------------------------------------------------------------------
    def check_integrity(self) -> None:
        """SQLite's quick_check, every chunk through zstd's checksum, and as many changes in the
        chunks as the complete transactions count."""
        try:
            bad = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
            if bad == ["ok"]:
                bad = self._check_chunks()
        except sqlite3.DatabaseError as e:
            bad = [str(e)]
        if bad != ["ok"]:
            what = "; ".join(" ".join(b.split()) for b in bad)  # quick_check's rows span lines
            raise LogError(f"change log {self.path} is damaged: {what}", hint=_DAMAGED_HINT)

    def _check_chunks(self) -> list[str]:
        zstd = Dictionaries(self._db, self.path)
        for cid, dict_id, data in self._db.execute("SELECT id, dict, CAST(data AS BLOB) FROM chunks"):
            try:
                chunk.decompress(data, zstd.get(cid, dict_id))
            except chunk.ChunkError as e:
                return [f"chunk {cid}: {e}"]
        # every chunk holds either complete transactions only, or part of one open transaction
        want, have = self._db.execute(
            "SELECT (SELECT coalesce(sum(n_changes), 0) FROM txns WHERE complete = 1), "
            "(SELECT coalesce(sum(n), 0) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM txns t "
            "WHERE t.id = c.first_txn AND t.id = c.last_txn AND NOT t.complete))").fetchone()
        return ["ok"] if want == have else [f"{want} changes committed, {have} stored"]

    def transactions(self, after: Lsn | None = None) -> Iterator[Transaction]:
        with self._reading() as reader:
            chunks = ChunkReader(reader, self.path)
            for t in reader.execute(_COMPLETE, (_floor(after),)):
                changes = chunks.changes(t)
                yield Transaction(t[1], Lsn(t[2]), t[3], t[4],
                                  list(changes) if t[4] <= SMALL_TXN else changes)

    def raw_changes(self, after: Lsn | None = None) -> Iterator[RawChange]:
        """One pass over the chunks in one snapshot: (commit LSN, LSN, action, schema, table, raw)."""
        with self._reading() as reader:
            yield from ChunkReader(reader, self.path).raw_changes(
                reader.execute(_COMPLETE, (_floor(after),)))

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own with one consistent snapshot for the whole read."""
        reader = sqlite3.connect(self.path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            yield reader
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log {self.path} cannot be read: {e}", hint=_DAMAGED_HINT) from None
        finally:
            reader.close()

    def summary(self) -> LogSummary:
        s = LogSummary()
        try:
            n, first, last, lsn = self._db.execute(
                "SELECT count(*), min(commit_time), max(commit_time), max(commit_lsn) FROM txns "
                "WHERE complete = 1"
            ).fetchone()
            counts = self._db.execute("SELECT relation, action, n FROM counts").fetchall()
        except sqlite3.DatabaseError as e:
            raise LogError(f"change log {self.path} is damaged: {e}", hint=_DAMAGED_HINT) from None
        s.transactions, s.first_commit_time, s.last_commit_time = n, first, last
        s.last_commit_lsn = Lsn(lsn) if lsn is not None else None
        for rel, action, count in counts:
            s.tables.setdefault(rel, {a: 0 for a in ACTION_NAMES.values()})[action] = count
        return s

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

    def raw_bytes(self) -> int | None:
        row = self._db.execute("SELECT sum(raw_bytes) FROM chunks").fetchone()
        return int(row[0] or 0)

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
        if self._worker is not None:
            self._worker.shutdown(cancel_futures=True)
            self._pending.clear()
        self._db.close()


# complete transactions after a commit LSN, in the order they were written (= commit order)
_COMPLETE = ("SELECT id, xid, commit_lsn, commit_time, n_changes FROM txns "
             "WHERE complete = 1 AND commit_lsn > ? ORDER BY id")


def _floor(after: Lsn | None) -> int:
    return after.value if after is not None else -1
