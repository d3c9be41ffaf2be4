"""Chunks: the SQLite log stores its changes in runs of consecutive changes compressed together.

A chunk is msgpack columns (segments, LSN deltas, actions, relations, raw wal2json text) under zstd
with its content checksum, so damaged or truncated bytes never decode into changes; the raw text of
each change comes back exactly as it was stored. Once the log has seen enough changes, a zstd
dictionary trained on them (stored in the log) keeps the small chunks of a slow stream small too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from typing import Any

import msgspec
import zstandard

LEVEL = 3  # zstd's default: as small as level 1 on these documents, and the work runs on a thread

DICT_SIZE = 64 << 10
TRAIN_SAMPLES = 1000  # changes sampled for the dictionary (at most SAMPLES_PER_RELATION of each
SAMPLES_PER_RELATION = 200  # relation), or what was sampled by TRAIN_AFTER changes
TRAIN_AFTER = 5000
MIN_TRAIN = (100, 16 << 10)  # fewer samples or bytes: no training (zstd crashes on a few bytes)

Entry = tuple[int, int, int, str, str, str, str]  # txn id, seq, LSN, action, schema, table, raw
Dictionary = tuple[int, bytes]  # id in the log's `dicts` table, zstd dictionary

_encode = msgspec.msgpack.Encoder().encode


class ChunkError(ValueError):
    """The stored bytes are not the chunk that was written (damaged or truncated)."""


@dataclass(frozen=True)
class Packed:
    """A compressed chunk, as one row of the log's `chunks` table."""

    first_txn: int
    last_txn: int
    n: int
    raw_bytes: int  # uncompressed size
    dict_id: int  # 0: none
    data: bytes


def _columns(entries: list[Entry]) -> list[Any]:
    """[segments, LSN deltas, actions, relation index per change, relations, raws]; a segment
    (txn, first seq, count) is a run of one transaction's changes with consecutive seqs."""
    segments: list[int] = []
    rel_ids: dict[tuple[str, str], int] = {}
    deltas, rels, raws = [], [], []
    prev_txn, next_seq, prev_lsn = -1, -1, 0
    for txn, seq, lsn, _action, schema, table, raw in entries:
        if txn != prev_txn or seq != next_seq:
            segments += (txn, seq, 0)
            prev_txn = txn
        segments[-1] += 1
        next_seq = seq + 1
        deltas.append(lsn - prev_lsn)
        prev_lsn = lsn
        rels.append(rel_ids.setdefault((schema, table), len(rel_ids)))
        raws.append(raw)
    actions = "".join(e[3] for e in entries)
    return [segments, deltas, actions, rels, list(rel_ids), raws]


def _compressor(dictionary: bytes | None = None) -> zstandard.ZstdCompressor:
    zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    return zstandard.ZstdCompressor(level=LEVEL, dict_data=zdict, write_checksum=True,
                                    write_content_size=True)


def decompressor(dictionary: bytes | None = None) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(zstandard.ZstdCompressionDict(dictionary) if dictionary else None)


class Packer:
    """Encodes and compresses chunks; lives on the log's one worker thread (zstd releases the GIL,
    so this overlaps with the daemon reading the stream)."""

    def __init__(self, dictionary: Dictionary | None) -> None:
        self.dict_id = dictionary[0] if dictionary else 0
        self._zstd = _compressor(dictionary[1] if dictionary else None)

    def pack(self, entries: list[Entry]) -> Packed:
        payload = _encode(_columns(entries))
        data = self._zstd.compress(payload)
        return Packed(entries[0][0], entries[-1][0], len(entries), len(payload), self.dict_id, data)

    def train(self, dict_id: int, samples: list[bytes]) -> Dictionary | None:
        """Train the dictionary every later chunk uses; None when zstd finds too little to learn."""
        if len(samples) < MIN_TRAIN[0] or sum(map(len, samples)) < MIN_TRAIN[1]:
            return None
        try:
            data = zstandard.train_dictionary(DICT_SIZE, samples).as_bytes()
        except zstandard.ZstdError:
            return None
        self.dict_id, self._zstd = dict_id, _compressor(data)
        return dict_id, data


class Sampler:
    """Collects the changes a dictionary is trained on, spread over the relations."""

    def __init__(self) -> None:
        self.samples: list[bytes] = []
        self._per_relation: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._seen = 0

    def add(self, schema: str, table: str, raw: str) -> bool:
        """True once there is enough to train on."""
        self._seen += 1
        if self._per_relation[schema, table] < SAMPLES_PER_RELATION:
            self._per_relation[schema, table] += 1
            self.samples.append(raw.encode())
        return len(self.samples) >= TRAIN_SAMPLES or self._seen >= TRAIN_AFTER


def decompress(data: bytes, zstd: zstandard.ZstdDecompressor) -> bytes:
    """The payload, after zstd checked the frame and its content checksum."""
    try:
        return zstd.decompress(data)
    except zstandard.ZstdError as e:
        raise ChunkError(str(e)) from None


class Decoded:
    """One decompressed chunk: its segments and the columns of its changes."""

    def __init__(self, data: bytes, n: int, zstd: zstandard.ZstdDecompressor) -> None:
        payload = decompress(data, zstd)
        self.spans: list[tuple[int, int, int, int]] = []  # (txn id, first seq, start, stop)
        start = 0
        try:
            flat, deltas, self.actions, rels, relations, self.raws = msgspec.msgpack.decode(payload)
            self.lsns = list(accumulate(deltas))
            self.schemas = [relations[r][0] for r in rels]
            self.tables = [relations[r][1] for r in rels]
            for i in range(0, len(flat), 3):
                txn, seq, count = flat[i:i + 3]
                self.spans.append((txn, seq, start, start + count))
                start += count
        except (msgspec.DecodeError, TypeError, ValueError, IndexError) as e:
            raise ChunkError(str(e) or type(e).__name__) from None
        if not (len(self.raws) == len(self.lsns) == len(self.actions) == start == n):
            raise ChunkError(f"holds {len(self.raws)} changes, the log says {n}")

    @cached_property
    def by_txn(self) -> dict[int, list[tuple[int, int, int, int]]]:
        out: dict[int, list[tuple[int, int, int, int]]] = {}
        for span in self.spans:
            out.setdefault(span[0], []).append(span)
        return out
