"""ChunkReader: the SQLite log's changes read back from its chunks, complete transactions only.

Chunks are read in the order they were written (= commit order); the last one decoded is kept, so
the many small transactions of one chunk decompress it once. Every transaction must come whole
(as many changes as its row counts), or the log is damaged: nothing is read past a hole.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from itertools import repeat
from pathlib import Path
from typing import Any

import zstandard

from pgcarry.changelog import chunk
from pgcarry.changelog.base import RawChange
from pgcarry.errors import LogError
from pgcarry.schemas.change import Change
from pgcarry.schemas.lsn import Lsn

DAMAGED_HINT = "nothing was applied; restore the log file from a copy, or take a new T0"

TxnRow = tuple[int, int, int, Any, int]  # id, xid, commit LSN, commit time, n_changes

_FROM = ("SELECT id, n, first_txn, last_txn, dict FROM chunks WHERE id >= (SELECT id FROM chunks "
         "WHERE last_txn >= ? ORDER BY last_txn, id LIMIT 1) ORDER BY id")


class Dictionaries:
    """A zstd decompressor per dictionary of the log, loaded when a chunk first needs it."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path
        self._zstd: dict[int, zstandard.ZstdDecompressor] = {0: chunk.decompressor()}

    def get(self, cid: int, dict_id: int) -> zstandard.ZstdDecompressor:
        if dict_id not in self._zstd:
            row = self.db.execute("SELECT CAST(data AS BLOB) FROM dicts WHERE id = ?", (dict_id,)).fetchone()
            if row is None:
                raise LogError(f"change log {self.path} is damaged: chunk {cid}: dictionary {dict_id} "
                               "is missing", hint=DAMAGED_HINT)
            self._zstd[dict_id] = chunk.decompressor(row[0])
        return self._zstd[dict_id]


class ChunkReader:
    def __init__(self, reader: sqlite3.Connection, path: Path) -> None:
        self.reader, self.path = reader, path
        self._zstd = Dictionaries(reader, path)
        self._id, self._first, self._last = -1, 0, 0
        self._dec: chunk.Decoded | None = None

    def _decoded(self, cid: int, n: int, first: int, last: int, dict_id: int) -> chunk.Decoded:
        if cid != self._id or self._dec is None:
            (data,) = self.reader.execute("SELECT CAST(data AS BLOB) FROM chunks WHERE id = ?",
                                          (cid,)).fetchone()
            try:
                self._dec = chunk.Decoded(data, n, self._zstd.get(cid, dict_id))
            except chunk.ChunkError as e:
                raise LogError(f"change log {self.path} is damaged: chunk {cid}: {e}",
                               hint=DAMAGED_HINT) from None
            self._id, self._first, self._last = cid, first, last
        return self._dec

    def _chunks(self, txn: int) -> Iterator[chunk.Decoded]:
        """The chunks from the one holding `txn`'s first change on, in order."""
        if self._dec is not None and self._first < txn < self._last:
            yield self._dec  # strictly inside the cached chunk: the whole transaction is there
            return
        for cid, n, first, last, dict_id in self.reader.execute(_FROM, (txn,)):
            if first > txn:
                return
            yield self._decoded(cid, n, first, last, dict_id)

    def raw_changes(self, txns: Iterable[TxnRow]) -> Iterator[RawChange]:
        """The changes of `txns` (complete, by id) in one pass, as replay's plain tuples."""
        for dec, runs in self._runs(txns):
            commits: list[int] = []
            for t, start, stop in runs:
                commits += repeat(t[2], stop - start)
            a, b = runs[0][1], runs[-1][2]
            if b - a == len(commits):  # one contiguous run: the common case
                yield from zip(commits, dec.lsns[a:b], dec.actions[a:b], dec.schemas[a:b],
                               dec.tables[a:b], dec.raws[a:b])
                continue
            for t, start, stop in runs:
                yield from zip(repeat(t[2]), dec.lsns[start:stop], dec.actions[start:stop],
                               dec.schemas[start:stop], dec.tables[start:stop], dec.raws[start:stop])

    def _runs(self, txns: Iterable[TxnRow]
              ) -> Iterator[tuple[chunk.Decoded, list[tuple[TxnRow, int, int]]]]:
        """Per chunk, the (txn row, start, stop) of its segments that belong to `txns`."""
        it = iter(txns)
        t = next(it, None)
        if t is None:
            return
        seen = 0
        for cid, n, first, last, dict_id in self.reader.execute(_FROM, (t[0],)):
            dec = self._decoded(cid, n, first, last, dict_id)
            runs = []
            for txn, _, start, stop in dec.spans:
                while t is not None and txn > t[0]:
                    self._whole(t, seen)
                    t, seen = next(it, None), 0
                if t is None:
                    break
                if txn < t[0]:
                    continue  # before `after`, or an incomplete copy: never read
                runs.append((t, start, stop))
                seen += stop - start
            if runs:
                yield dec, runs
            if t is None:
                return
        while t is not None:
            self._whole(t, seen)
            t, seen = next(it, None), 0

    def changes(self, t: TxnRow) -> Iterator[Change]:
        """One transaction's changes, looked up on their own (transactions() hands them out)."""
        seen = 0
        for dec in self._chunks(t[0]):
            for _, seq, start, stop in dec.by_txn.get(t[0], ()):
                for i in range(start, stop):
                    yield Change(seq + i - start, Lsn(dec.lsns[i]), dec.actions[i], dec.schemas[i],
                                 dec.tables[i], dec.raws[i])
                seen += stop - start
        self._whole(t, seen)

    def _whole(self, t: TxnRow, seen: int) -> None:
        if seen != t[4]:
            raise LogError(f"change log {self.path} is damaged: transaction at commit LSN "
                           f"{Lsn(t[2])} has {t[4]} changes, {seen} found", hint=DAMAGED_HINT)
