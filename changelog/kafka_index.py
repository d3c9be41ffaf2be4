"""The reader's side of the Kafka log: an index of complete transaction copies, and a cursor over them.

A copy is complete when its begin record, chunks holding changes 0..n-1 in order, and its commit
marker (which names n) were read; a copy with a hole is ignored like one without a marker (the
re-sent copy fills it). The index reads headers only; the cursor decodes the chosen copies' chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pgcarry.changelog.kafka_io import KafkaIO
from pgcarry.schemas.change import Change
from pgcarry.schemas.lsn import Lsn

FORMAT = 2  # begin, chunks of changes (msgpack), commit marker
BEGIN, CHUNK, COMMIT = b"begin", b"changes", b"commit"
Copy = tuple[int, int, int, int, str | None]  # begin offset, marker offset, xid, n, commit time
RawTuple = tuple[int, int, str, str, str, str]  # seq, LSN, action, schema, table, raw
_CHUNK = msgspec.msgpack.Decoder(list[tuple[int, int, str, str, str, str]])
encode_chunk = msgspec.msgpack.Encoder().encode


def headers(record: Any) -> dict[str, bytes]:
    return {k: bytes(v) for k, v in record.headers}


def header(record: Any, name: str) -> bytes | None:
    for k, v in record.headers:
        if k == name:
            return bytes(v)
    return None


def _lsn(h: dict[str, bytes]) -> int:
    return Lsn.parse(h["commit_lsn"].decode()).value


@dataclass
class OpenCopy:
    begin: int  # offset of the begin record
    xid: int
    next: int = 0  # the position (0-based) the next chunk must start at
    seen: int = 0  # changes read (a copy with a hole has fewer than its marker's n)
    broken: bool = False  # a chunk was missing or out of order


@dataclass
class Index:
    """Complete copies by commit LSN (the first one wins) and the counts of those copies.

    An index seeded from a snapshot (``from_snapshot``) knows every complete commit LSN up to
    ``floor`` except the ``pending`` ones without keeping them: it answers ``has()`` and the
    summary, not ``complete`` (readers of changes build a full index)."""

    scanned: int = 0  # next offset to read
    complete: dict[int, Copy] = field(default_factory=dict)
    open: dict[int, OpenCopy] = field(default_factory=dict)
    holes: dict[int, tuple[int, int]] = field(default_factory=dict)  # LSN -> (changes read, n)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    transactions: int = 0
    first_time: str | None = None
    last_time: str | None = None
    last: int | None = None  # highest complete commit LSN
    bytes: int = 0
    floor: int = -1
    pending: set[int] = field(default_factory=set)

    def has(self, lsn: int) -> bool:
        return lsn in self.complete or (lsn <= self.floor and lsn not in self.pending)

    def add(self, chunk: list[Any]) -> None:
        for r in chunk:
            self.bytes += max(r.serialized_key_size, 0) + max(r.serialized_value_size, 0)
            h = headers(r)
            kind = h.get("type")
            if kind == CHUNK:
                self._chunk(h)
            elif kind == BEGIN:
                self.open[_lsn(h)] = OpenCopy(r.offset, int(h.get("xid") or 0))
            elif kind == COMMIT:
                self._commit(r, h)
            self.scanned = r.offset + 1

    def _chunk(self, h: dict[str, bytes]) -> None:
        o = self.open.get(_lsn(h))
        if o is None:
            return
        at, n = int(h["i"]), int(h["n"])
        if at >= o.next:  # (a chunk starting before `next` is a duplicate)
            o.broken |= at > o.next  # a lost chunk: this copy never counts
            o.next, o.seen = at + n, o.seen + n

    def _commit(self, r: Any, h: dict[str, bytes]) -> None:
        lsn = _lsn(h)
        begun = self.open.pop(lsn, None)
        if begun is None or self.has(lsn):  # a marker without its begin, or a re-sent copy
            return
        marker = json.loads(r.value)
        n = int(marker["n"])
        if begun.broken or begun.next != n:
            self.holes[lsn] = (begun.seen, n)
            return
        self.holes.pop(lsn, None)
        self.pending.discard(lsn)
        self.complete[lsn] = (begun.begin, r.offset, begun.xid, n, marker.get("commit_time"))
        self.count(lsn, marker.get("commit_time"), marker["counts"])

    def count(self, lsn: int, ctime: str | None, counts: dict[str, dict[str, int]]) -> None:
        """Add one complete transaction's counts (the writer calls this for its own commits)."""
        self.transactions += 1
        self.last = lsn if self.last is None else max(self.last, lsn)
        for rel, per in counts.items():
            mine = self.counts.setdefault(rel, {})
            for action, k in per.items():
                mine[action] = mine.get(action, 0) + k
        if ctime:
            self.first_time = min(self.first_time or ctime, ctime)
            self.last_time = max(self.last_time or ctime, ctime)

    def own_commit(self, lsn: int, ctime: str | None, counts: dict[str, dict[str, int]]) -> None:
        """A copy the writer completed itself: counted, and known to has() without a read."""
        for k in (*self.open, *self.holes):
            if self.floor < k < lsn:
                self.pending.add(k)  # an unfinished copy from before stays unknown below the floor
        self.pending.discard(lsn)
        self.holes.pop(lsn, None)
        self.open.pop(lsn, None)
        self.floor = max(self.floor, lsn)
        self.count(lsn, ctime, counts)

    def last_lsn(self) -> Lsn | None:
        return Lsn(self.last) if self.last is not None else None

    # -- snapshots (kept in the state topic, so status need not read the whole log) ------------
    def snapshot(self, offset: int, in_flight: dict[int, OpenCopy]) -> dict[str, Any]:
        """Everything a reader needs to go on from `offset` (the end of what this index covers)."""
        opened = {**self.open, **in_flight}
        floor = max(self.floor, self.last if self.last is not None else -1)
        pending = (self.pending | set(opened) | set(self.holes)) - set(self.complete)
        return {
            "format": FORMAT, "offset": offset, "transactions": self.transactions,
            "first_time": self.first_time, "last_time": self.last_time, "last": self.last,
            "bytes": self.bytes, "counts": self.counts, "floor": floor,
            "pending": sorted(k for k in pending if k <= floor),
            "open": {str(k): [o.begin, o.xid, o.next, o.seen, o.broken] for k, o in opened.items()},
            "holes": {str(k): list(v) for k, v in self.holes.items()},
        }

    @classmethod
    def from_snapshot(cls, s: dict[str, Any]) -> Index:
        return cls(
            scanned=s["offset"], counts=s["counts"], transactions=s["transactions"],
            first_time=s["first_time"], last_time=s["last_time"], last=s["last"], bytes=s["bytes"],
            floor=s["floor"], pending=set(s["pending"]),
            open={int(k): OpenCopy(*v) for k, v in s["open"].items()},
            holes={int(k): (v[0], v[1]) for k, v in s["holes"].items()},
        )


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

    def raw(self, lsn: int, start: int, stop: int) -> Iterator[RawTuple]:
        """The changes of one complete copy (offsets start..stop-1) as (seq, LSN, action, schema,
        table, raw), each position once, exactly as the index counted them."""
        at = 0
        for r in self._records(start, stop):
            h = headers(r)
            if h.get("type") != CHUNK or _lsn(h) != lsn or int(h["i"]) != at:
                continue
            changes = _CHUNK.decode(r.value)
            at += len(changes)
            yield from changes

    def changes(self, lsn: int, start: int, stop: int) -> Iterator[Change]:
        for seq, at, action, schema, table, raw in self.raw(lsn, start, stop):
            yield Change(seq, Lsn(at), action, schema, table, raw)

    def close(self) -> None:
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close:
                close()
            self._chunks = None
