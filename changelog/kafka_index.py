"""The reader's side of the Kafka log: an index of complete transaction copies, and a cursor over them.

The index is built from the begin and commit records alone (changes are only counted), so status
and summary read the topic once; the cursor then reads each chosen copy's changes in commit order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pgcarry.changelog.kafka_io import KafkaIO
from pgcarry.schemas.change import Change
from pgcarry.schemas.lsn import Lsn

BEGIN, CHANGE, COMMIT = b"begin", b"change", b"commit"
Copy = tuple[int, int, int, int, str | None]  # begin offset, marker offset, xid, n, commit time


def header(record: Any, name: str) -> bytes | None:
    for k, v in record.headers:
        if k == name:
            return bytes(v)
    return None


def _lsn(record: Any) -> int:
    return Lsn.parse(header(record, "commit_lsn").decode()).value  # type: ignore[union-attr]


class Index:
    """Complete copies by commit LSN (the first one wins) and the counts of those copies."""

    def __init__(self) -> None:
        self.scanned = 0  # next offset to read
        self.complete: dict[int, Copy] = {}
        self.open: dict[int, tuple[int, int]] = {}  # commit LSN -> (begin offset, xid) of a copy in flight
        self.counts: dict[str, dict[str, int]] = {}
        self.first_time: str | None = None
        self.last_time: str | None = None
        self.bytes = 0

    def add(self, chunk: list[Any]) -> None:
        for r in chunk:
            self.bytes += max(r.serialized_key_size, 0) + max(r.serialized_value_size, 0)
            kind = header(r, "type")
            if kind == BEGIN:
                self.open[_lsn(r)] = (r.offset, int(header(r, "xid") or 0))
            elif kind == COMMIT:
                self._commit(r)
            self.scanned = r.offset + 1

    def _commit(self, r: Any) -> None:
        lsn = _lsn(r)
        begun = self.open.pop(lsn, None)
        if begun is None or lsn in self.complete:  # a marker without its begin, or a re-sent copy
            return
        marker = json.loads(r.value)
        ctime = marker.get("commit_time")
        self.complete[lsn] = (begun[0], r.offset, begun[1], int(marker["n"]), ctime)
        for rel, per in marker["counts"].items():
            mine = self.counts.setdefault(rel, {})
            for action, n in per.items():
                mine[action] = mine.get(action, 0) + n
        if ctime:
            self.first_time = min(self.first_time or ctime, ctime)
            self.last_time = max(self.last_time or ctime, ctime)

    def last_lsn(self) -> Lsn | None:
        return Lsn(max(self.complete)) if self.complete else None


class Cursor:
    """Reads offset ranges of one partition, seeking only when the next range is not contiguous."""

    SKIP_AHEAD = 5000  # read forward over at most this many records rather than seek

    def __init__(self, io: KafkaIO, topic: str, end: int) -> None:
        self._io, self._topic, self._end = io, topic, end
        self._chunks: Iterator[list[Any]] | None = None
        self._buf: list[Any] = []
        self._i = 0
        self._next = -1  # the offset the reader returns next

    def _seek(self, offset: int) -> None:
        self.close()
        self._chunks = self._io.read(self._topic, offset, self._end)
        self._buf, self._i, self._next = [], 0, offset

    def _records(self, start: int, stop: int) -> Iterator[Any]:
        if self._chunks is None or not self._next <= start <= self._next + self.SKIP_AHEAD:
            self._seek(start)
        while True:
            if self._i >= len(self._buf):
                assert self._chunks is not None
                chunk = next(self._chunks, None)
                if chunk is None:
                    return
                self._buf, self._i = chunk, 0
            r = self._buf[self._i]
            if r.offset >= stop:
                return
            self._i += 1
            self._next = r.offset + 1
            if r.offset >= start:
                yield r

    def raw(self, lsn: int, start: int, stop: int) -> Iterator[tuple[int, int, str, str, str, str]]:
        """The changes of one copy (offsets start..stop-1) as (seq, LSN, action, schema, table,
        raw) in sequence, each sequence once."""
        last = -1
        for r in self._records(start, stop):
            h = {k: bytes(v) for k, v in r.headers}
            if h.get("type") != CHANGE or Lsn.parse(h["commit_lsn"].decode()).value != lsn:
                continue
            seq = int(h["seq"])
            if seq <= last:
                continue
            last = seq
            yield (seq, Lsn.parse(h["lsn"].decode()).value, h["action"].decode(), h["schema"].decode(),
                   h["table"].decode(), r.value.decode())

    def changes(self, lsn: int, start: int, stop: int) -> Iterator[Change]:
        for seq, at, action, schema, table, raw in self.raw(lsn, start, stop):
            yield Change(seq, Lsn(at), action, schema, table, raw)

    def close(self) -> None:
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close:
                close()
            self._chunks = None
