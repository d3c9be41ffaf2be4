"""KafkaLog: the change log in one Kafka partition (commit order = log order), state in a compacted topic.

Each source transaction is written as a begin record, its changes and a commit marker; readers take
the first complete copy of each commit LSN and ignore copies without a marker. Why markers and not
Kafka transactions: docs/kafka.md.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from array import array
from bisect import bisect_left, insort
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from pgcarry.changelog.base import ChangeLog, LogSummary, RawChange
from pgcarry.changelog.kafka_index import BEGIN, CHANGE, COMMIT, Cursor, Index
from pgcarry.changelog.kafka_io import MAX_RECORD_BYTES, KafkaIO, Record
from pgcarry.errors import LogError
from pgcarry.schemas.change import ACTION_NAMES, DELETE, Change, Transaction
from pgcarry.schemas.config import KafkaConfig
from pgcarry.schemas.lsn import Lsn

BUFFER_RECORDS = 1000  # records held before they go to the producer (which holds ~2 MiB more)
BUFFER_BYTES = 1 << 20
SMALL_TXN = 2000  # transactions up to this size are read into a list, larger ones lazily
SYNC_WAIT = 5.0  # seconds sync() waits for acknowledgements before it reports the broker away


def default_topic(slot: str) -> str:
    return f"pgcarry-{slot}"


_JSON = json.JSONDecoder()


def record_key(change: Change) -> bytes:
    """``schema.table:pk`` (composite keys comma-separated; TRUNCATE has none). A label only: the
    log's order and identity come from the headers, so plain float parsing is good enough."""
    values = _pk_values(change.raw, change.action)
    if values is None:
        values = _pk_values_parsed(change.raw, change.action)
    return f"{change.relation}:{','.join(str(v) for v in values)}".encode()


def _pk_values(raw: str, action: str) -> list[Any] | None:
    """The key values found in wal2json v2's fixed layout (columns, then identity, then pk) without
    parsing the whole row; None where the layout is not the expected one."""
    at = raw.rfind('"pk":[')
    if at < 0:
        return []
    start = raw.find('"identity":[' if action == DELETE else '"columns":[')
    if start < 0:
        return None
    values = []
    try:
        for needle in _needles(raw[at + 5:]):
            i = raw.find(needle, start, at)
            j = raw.find('"value":', i, at) if i >= 0 else -1
            if j < 0:
                return None
            values.append(_JSON.raw_decode(raw, j + 8)[0])
    except (ValueError, KeyError, TypeError):
        return None
    return values


@lru_cache(maxsize=1024)
def _needles(pk_json: str) -> tuple[str, ...]:
    """For each key column, the text its entry in an image starts with."""
    names = [c["name"] for c in _JSON.raw_decode(pk_json)[0]]
    return tuple('{"name":' + json.dumps(n, ensure_ascii=False) + ',"type":' for n in names)


def _pk_values_parsed(raw: str, action: str) -> list[Any]:
    doc = json.loads(raw)
    image = doc.get("identity") if action == DELETE else doc.get("columns") or doc.get("identity")
    values = {c["name"]: c.get("value") for c in image or ()}
    return [values.get(p["name"]) for p in doc.get("pk") or ()]


class KafkaLog(ChangeLog):
    def __init__(self, cfg: KafkaConfig, *, slot: str, create: bool = False, readonly: bool = False) -> None:
        self.topic = cfg.topic or default_topic(slot)
        self.state_topic = cfg.state_topic or f"{self.topic}-state"
        self.readonly = readonly
        self._io = KafkaIO(cfg.bootstrap_servers, cfg.security)
        try:
            self._ensure_topics(cfg, create)
        except BaseException:
            self._io.close()
            raise
        self._index = Index()
        self._state: dict[str, Any] = {}
        self._state_pos = 0
        self._open: Lsn | None = None
        self._xid = 0
        self._txn_headers: list[tuple[str, bytes]] = []
        self._skip = self._begun = False
        self._n = 0
        self._counts: dict[str, dict[str, int]] = {}
        self._buf: list[Record] = []
        self._buf_bytes = 0
        self.max_buffered_bytes = 0  # the writer's high-water mark, for tests and metrics
        self._pending_commit: Lsn | None = None
        self._written = array("Q")  # commit LSNs complete in the topic or sent: begin() skips them
        self._durable: Lsn | None = None
        if not readonly:
            self._check_retention()
            self._refresh()
            self._written.extend(sorted(self._index.complete))
            self._durable = self._index.last_lsn()

    def _ensure_topics(self, cfg: KafkaConfig, create: bool) -> None:
        have = self._io.topics()
        missing = [t for t in (self.topic, self.state_topic) if t not in have]
        if not missing:
            return
        if not create:
            raise LogError(
                f"change log topic {missing[0]} does not exist",
                hint="run `pgcarry start` first, or check [log.kafka] topic", bootstrap=cfg.bootstrap_servers,
            )
        if not cfg.create_topic:
            raise LogError(
                f"topic {missing[0]} does not exist and create-topic = false",
                hint="create it with one partition and retention.ms=-1 (the state topic compacted)",
            )
        common = {"min.insync.replicas": str(cfg.min_insync_replicas), "max.message.bytes": str(MAX_RECORD_BYTES)}
        for name in missing:
            policy = {"cleanup.policy": "compact"} if name == self.state_topic else {
                "cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
            self._io.create_topic(name, cfg.replication_factor, {**common, **policy})

    def _check_retention(self) -> None:
        """Refuse to capture into a topic that may delete or compact changes before the cutover."""
        conf = self._io.topic_config(self.topic)
        bad = [f"{k}={conf.get(k)}" for k in ("retention.ms", "retention.bytes") if conf.get(k) != "-1"]
        if "compact" in conf.get("cleanup.policy", ""):
            bad.append(f"cleanup.policy={conf['cleanup.policy']}")
        if bad:
            raise LogError(
                f"topic {self.topic} may delete captured changes ({', '.join(bad)})",
                hint="set retention.ms=-1, retention.bytes=-1 and cleanup.policy=delete on it",
            )

    @property
    def lock_path(self) -> Path:
        digest = hashlib.sha256(f"{self._io.bootstrap}/{self.topic}".encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pgcarry-kafka-{digest}.lock"

    # -- writing -----------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise LogError("the change log was opened read-only", topic=self.topic)

    def _put(self, record: Record) -> None:
        self._buf.append(record)
        self._buf_bytes += len(record[1]) + len(record[0] or b"") + 64
        self.max_buffered_bytes = max(self.max_buffered_bytes, self._buf_bytes)
        if len(self._buf) >= BUFFER_RECORDS or self._buf_bytes >= BUFFER_BYTES:
            self._send()

    def _send(self) -> None:
        if self._buf:
            self._io.send(self.topic, self._buf)
            self._buf, self._buf_bytes = [], 0

    def _headers(self, kind: bytes, *extra: tuple[str, bytes]) -> list[tuple[str, bytes]]:
        return [("type", kind), *self._txn_headers, *extra]

    def begin(self, xid: int, commit_lsn: Lsn) -> bool:
        self._writable()
        self._open, self._xid, self._n, self._begun = commit_lsn, xid, 0, False
        self._txn_headers = [("commit_lsn", str(commit_lsn).encode()), ("xid", b"%d" % xid)]
        self._counts = {}
        i = bisect_left(self._written, commit_lsn.value)
        self._skip = i < len(self._written) and self._written[i] == commit_lsn.value
        return not self._skip

    def append(self, change: Change) -> None:
        if self._skip:
            return
        if self._open is None:
            raise LogError("change outside a transaction", lsn=change.lsn)
        if not self._begun:  # written lazily: an empty transaction leaves nothing in the topic
            self._put((None, b"", self._headers(BEGIN)))
            self._begun = True
        self._put((record_key(change), change.raw.encode(), self._headers(
            CHANGE, ("seq", b"%d" % change.seq), ("lsn", str(change.lsn).encode()),
            ("action", change.action.encode()), ("schema", change.schema.encode()),
            ("table", change.table.encode()),
        )))
        per = self._counts.setdefault(change.relation, {})
        name = ACTION_NAMES.get(change.action, change.action)
        per[name] = per.get(name, 0) + 1
        self._n += 1

    def commit(self, commit_time: str | None) -> None:
        if self._open is None:
            raise LogError("commit outside a transaction")
        if not self._skip and self._n:
            marker = json.dumps({"n": self._n, "commit_time": commit_time, "counts": self._counts})
            extra = [("n", b"%d" % self._n), ("commit_time", (commit_time or "").encode())]
            self._put((None, marker.encode(), self._headers(COMMIT, *extra)))
            insort(self._written, self._open.value)
        self._pending_commit, self._open = self._open, None
        self._skip, self._counts = False, {}

    def sync(self) -> Lsn | None:
        if self.readonly:
            return self._durable
        self._send()
        self._io.flush(SYNC_WAIT)  # acks=all for every record handed over, or LogUnavailableError
        if self._pending_commit is not None:
            self._durable = max(self._durable or self._pending_commit, self._pending_commit)
            self._pending_commit = None
        return self._durable

    # -- reading -----------------------------------------------------------------------------
    def _refresh(self) -> int:
        end = self._io.end_offset(self.topic)
        for chunk in self._io.read(self.topic, self._index.scanned, end):
            self._index.add(chunk)
        self._index.scanned = max(self._index.scanned, end)
        return end

    def _complete(self, after: Lsn | None) -> Iterator[tuple[Cursor, int, tuple[Any, ...]]]:
        """Each complete transaction past `after` in commit order, with a cursor to read it."""
        end = self._refresh()
        floor = after.value if after is not None else -1
        cursor = Cursor(self._io, self.topic, end)
        try:
            for lsn in sorted(k for k in self._index.complete if k > floor):
                yield cursor, lsn, self._index.complete[lsn]
        finally:
            cursor.close()

    def transactions(self, after: Lsn | None = None) -> Iterator[Transaction]:
        for cursor, lsn, (first, marker, xid, n, ctime) in self._complete(after):
            changes = cursor.changes(lsn, first + 1, marker)
            yield Transaction(xid, Lsn(lsn), ctime, n, list(changes) if n <= SMALL_TXN else changes)

    def raw_changes(self, after: Lsn | None = None) -> Iterator[RawChange]:
        """Replay's bulk path: the same changes as ``transactions(after)``, as plain tuples."""
        for cursor, lsn, (first, marker, *_) in self._complete(after):
            for _, at, action, schema, table, raw in cursor.raw(lsn, first + 1, marker):
                yield (lsn, at, action, schema, table, raw)

    def summary(self) -> LogSummary:
        self._refresh()
        ix = self._index
        tables = {rel: {a: 0 for a in ACTION_NAMES.values()} | per for rel, per in ix.counts.items()}
        return LogSummary(len(ix.complete), ix.first_time, ix.last_time, ix.last_lsn(), tables)

    def size_bytes(self) -> int:
        self._refresh()
        return self._index.bytes

    # -- manifest and state --------------------------------------------------------------------
    def get_state(self, key: str) -> Any:
        end = self._io.end_offset(self.state_topic)
        for chunk in self._io.read(self.state_topic, self._state_pos, end):
            for r in chunk:
                if r.value is None:
                    self._state.pop(r.key.decode(), None)
                else:
                    self._state[r.key.decode()] = json.loads(r.value)
        self._state_pos = max(self._state_pos, end)
        return self._state.get(key)

    def set_state(self, key: str, value: Any) -> None:
        """Durable on return (acks=all); the latest record of a key wins."""
        self._writable()
        self._send()  # keep the log's records ahead of the state that may describe them
        self._io.send_and_wait(self.state_topic, (key.encode(), json.dumps(value).encode(), []))

    def close(self) -> None:
        self._io.close()


__all__ = ["KafkaLog", "default_topic", "record_key"]
