"""KafkaLog: the change log in one Kafka partition (commit order = log order), state in a compacted topic.

Each source transaction is written as a begin record, chunks of up to 1,000 changes (msgpack) and
a commit marker; readers take the first complete copy of each commit LSN and ignore copies without
a marker or with a missing chunk. One writer at a time holds a lease in the state topic and keeps
a snapshot of the counts there, so `status` reads only the records after it. Why markers and not
Kafka transactions, and why the lease: docs/kafka.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgcarry.changelog import kafka_lease
from pgcarry.changelog.base import ChangeLog, DaemonLock, LogSummary, RawChange
from pgcarry.changelog.kafka_index import (
    BEGIN, CHUNK, COMMIT, FORMAT, Cursor, Index, OpenCopy, encode_chunk,
)
from pgcarry.changelog.kafka_io import MAX_RECORD_BYTES, KafkaIO, Record
from pgcarry.errors import ChangeTooLargeError, LogError, LogUnavailableError
from pgcarry.schemas.change import ACTION_NAMES, Change, Transaction
from pgcarry.schemas.config import KafkaConfig, survives_one_broker_loss
from pgcarry.schemas.lsn import Lsn

CHUNK_CHANGES = 1000  # changes per chunk record
CHUNK_BYTES = 1 << 20  # ... or this many bytes of them (at most half the topic's record limit)
BUFFER_RECORDS = 1000  # records held before they go to the producer (which holds ~2 MiB more)
BUFFER_BYTES = 1 << 20
RECORD_OVERHEAD = 1024  # bytes a chunk of one change adds to it (batch, headers, msgpack)
SMALL_TXN = 2000  # transactions up to this size are read into a list, larger ones lazily
SYNC_WAIT = 5.0  # seconds sync() waits for acknowledgements before it reports the broker away
SNAPSHOT_EVERY = 60.0  # seconds between counts snapshots (status reads the records after the last)
# the state topic rolls a segment an hour, so compaction keeps it to its live keys (lease beats
# and snapshots would otherwise pile up in the active segment for a week)
STATE_TOPIC = {"cleanup.policy": "compact", "segment.ms": str(3600_000)}
SUMMARY, FORMAT_KEY = "summary", "format"
log = logging.getLogger(__name__)


def default_topic(slot: str) -> str:
    return f"pgcarry-{slot}"


def _replication_problems(replicas: int, conf: dict[str, str]) -> list[str]:
    insync = int(conf.get("min.insync.replicas") or 1)
    bad = []
    if not survives_one_broker_loss(replicas, insync):
        bad.append(f"replication factor {replicas} with min.insync.replicas={insync}")
    if conf.get("unclean.leader.election.enable") == "true":
        bad.append("unclean.leader.election.enable=true")
    return bad


class KafkaLog(ChangeLog):
    def __init__(self, cfg: KafkaConfig, *, slot: str, create: bool = False, readonly: bool = False) -> None:
        self.topic = cfg.topic or default_topic(slot)
        self.state_topic = cfg.state_topic or f"{self.topic}-state"
        self.readonly = readonly
        self._io = KafkaIO(cfg.bootstrap_servers, cfg.security, cfg.compression)
        self._max_record = MAX_RECORD_BYTES
        try:
            self._ensure_topics(cfg, create)
        except BaseException:
            self._io.close()
            raise
        self._full = Index()  # every complete copy with its offsets, for the readers of changes
        self._acct: Index | None = None  # counts (from the snapshot on); the writer adds its own
        self._state: dict[str, Any] = {}
        self._lease: kafka_lease.Lease | None = None
        self._open: Lsn | None = None
        self._txn_headers: list[tuple[str, bytes]] = []
        self._skip = self._begun = self._wrote = False
        self._n = self._i = 0
        self._counts: dict[tuple[str, str, str], int] = {}
        self._chunk: list[tuple[int, int, str, str, str, str]] = []
        self._chunk_bytes = 0
        self._chunk_limit = min(CHUNK_BYTES, self._max_record // 2)
        self._buf: list[Record] = []
        self._labels: list[str | None] = []
        self._buf_bytes = 0
        self.max_buffered_bytes = 0  # the writer's high-water mark, for tests and metrics
        self._pending_commit: Lsn | None = None
        self._durable: Lsn | None = None
        self._snapshot_at = time.monotonic()
        try:
            self._check_format(create)
            if not readonly:
                self._durable = self._accounting().last_lsn()
        except BaseException:
            self._io.close()
            raise

    # -- topics --------------------------------------------------------------------------------
    def _ensure_topics(self, cfg: KafkaConfig, create: bool) -> None:
        """Check the existing topics (a writer: their replication and retention), then create
        the missing ones when `create` and check those too: nothing is created for a bad setup."""
        have = self._io.topics()
        missing = [t for t in (self.topic, self.state_topic) if t not in have]
        if missing and not create:
            raise LogError(
                f"change log topic {missing[0]} does not exist",
                hint="run `pgcarry start` first, or check [log.kafka] topic", bootstrap=cfg.bootstrap_servers,
            )
        if self.readonly:
            return
        present = [t for t in (self.topic, self.state_topic) if t in have]
        for name in present:
            self._check_topic(cfg, name)
        if not missing:
            return
        if not cfg.create_topic:
            raise LogError(
                f"topic {missing[0]} does not exist and create-topic = false",
                hint="create it with one partition, retention.ms=-1, replication factor 3 and "
                     "min.insync.replicas=2 (the state topic compacted)",
            )
        common = {"min.insync.replicas": str(cfg.min_insync_replicas), "max.message.bytes": str(MAX_RECORD_BYTES)}
        for name in missing:
            policy = STATE_TOPIC if name == self.state_topic else {
                "cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
            self._io.create_topic(name, cfg.replication_factor or 1, {**common, **policy})
            self._check_topic(cfg, name)

    def _check_topic(self, cfg: KafkaConfig, name: str) -> None:
        """Refuse a topic that may lose acknowledged records when one broker fails, or (the log
        topic) delete or compact changes before the cutover. Settings as the broker reports them."""
        replicas, conf = self._io.describe(name)
        bad = [] if cfg.single_broker else _replication_problems(replicas, conf)
        if name == self.topic:
            bad += [f"{k}={conf.get(k)}" for k in ("retention.ms", "retention.bytes") if conf.get(k) != "-1"]
            if "compact" in conf.get("cleanup.policy", ""):
                bad.append(f"cleanup.policy={conf['cleanup.policy']}")
            self._max_record = self._io.max_record = int(conf.get("max.message.bytes") or MAX_RECORD_BYTES)
        if bad:
            raise LogError(
                f"topic {name} may lose captured changes ({', '.join(bad)})",
                hint="a confirmed change must outlive one broker's loss: replication factor >= 3 with "
                     "min.insync.replicas >= 2 (or min.insync.replicas = replication factor >= 2), "
                     "unclean leader election off; the log topic needs retention.ms=-1, retention.bytes=-1 "
                     "and cleanup.policy=delete (single-broker = true allows one broker, knowingly)",
            )

    def _check_format(self, create: bool) -> None:
        found = self.get_state(FORMAT_KEY)
        if found is None and create and not self.readonly:
            self.set_state(FORMAT_KEY, FORMAT)
        elif found != FORMAT and (found is not None or self.get_state("manifest") is not None):
            raise LogError(f"topic {self.topic} holds Kafka log format {found or 1}, this pgcarry reads {FORMAT}",
                           hint="finish this capture with the pgcarry that started it, or take a new T0")

    @property
    def lock_path(self) -> Path:
        digest = hashlib.sha256(f"{self._io.bootstrap}/{self.topic}".encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pgcarry-kafka-{digest}.lock"

    def lock(self) -> DaemonLock:
        return _WriterLock(self)

    def active_writer(self) -> dict[str, Any] | None:
        rec = self.get_state(kafka_lease.KEY)
        mine = self._lease is not None and rec is not None and rec.get("id") == self._lease.id
        if not kafka_lease.live(rec) or mine:
            return None
        assert rec is not None
        return {"host": rec.get("host"), "pid": rec.get("pid"), "beat": rec.get("beat")}

    # -- the lease and the snapshot ------------------------------------------------------------
    def _take_lease(self) -> None:
        self._writable()
        self._lease = kafka_lease.Lease(lambda: self.get_state(kafka_lease.KEY),
                                        lambda rec: self.set_state(kafka_lease.KEY, rec), f"topic {self.topic}")
        try:
            self._lease.acquire()
        except BaseException:
            self._lease = None
            raise

    def _drop_lease(self) -> None:
        """Leave a snapshot of the counts and free the lease (a fenced writer writes neither)."""
        lease = self._lease
        if lease is None:
            return
        try:
            if self._io.error is None:
                self.sync()  # also checks the lease: a fenced writer stops here
                self._snapshot()
            self._lease = None
            lease.release()
        except LogError as e:  # the next writer reads the records after the last snapshot
            log.warning("change log lease not released cleanly: %s", e)
        finally:
            self._lease = None

    def keepalive(self) -> None:
        """Renew the lease while capture waits (a fenced writer stops here too)."""
        if self._lease is not None:
            try:
                self._lease.renew()
            except LogUnavailableError:
                pass  # the broker is away; a writer that took the lease meanwhile fences us later

    def _snapshot(self) -> None:
        acct = self._accounting()
        in_flight = {self._open.value: OpenCopy(-1, 0, self._i, self._i)} if self._open and self._begun else {}
        offset = self._io.end_offset(self.topic)  # after a flush: everything before it is ours
        acct.scanned = offset
        self.set_state(SUMMARY, acct.snapshot(offset, in_flight))
        self._snapshot_at = time.monotonic()

    def _accounting(self) -> Index:
        """The counting index: seeded from the snapshot, then (a reader, or a writer before its
        first record) the records after it; a writer counts its own records as it writes them."""
        if self._acct is None:
            snap = self.get_state(SUMMARY)
            self._acct = Index.from_snapshot(snap) if snap and snap.get("format") == FORMAT else Index()
        if self.readonly or not self._wrote:
            self._scan(self._acct)
        return self._acct

    def slot_acquired(self) -> None:
        """The capture daemon streams the slot now: a writer before it has stopped, and what it
        sent is in the topic. Read it before writing, so begin() skips what it completed."""
        if not self.readonly and not self._wrote:
            self._accounting()

    # -- writing -----------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise LogError("the change log was opened read-only", topic=self.topic)

    def _put(self, record: Record, label: str | None = None) -> None:
        size = len(record[1]) + len(record[0] or b"")
        self._buf.append(record)
        self._labels.append(label)
        self._wrote = True
        self._buf_bytes += size + 64
        assert self._acct is not None
        self._acct.bytes += size
        self.max_buffered_bytes = max(self.max_buffered_bytes, self._buf_bytes + self._chunk_bytes)
        if len(self._buf) >= BUFFER_RECORDS or self._buf_bytes >= BUFFER_BYTES:
            self._send()

    def _send(self) -> None:
        if self._buf:
            self._io.send(self.topic, self._buf, self._labels)
            self._buf, self._labels, self._buf_bytes = [], [], 0

    def begin(self, xid: int, commit_lsn: Lsn) -> bool:
        self._writable()
        self._open, self._n, self._i, self._begun = commit_lsn, 0, 0, False
        self._txn_headers = [("commit_lsn", str(commit_lsn).encode()), ("xid", b"%d" % xid)]
        self._counts = {}
        assert self._acct is not None
        self._skip = self._acct.has(commit_lsn.value)
        return not self._skip

    def append(self, change: Change) -> None:
        if self._skip:
            return
        if self._open is None:
            raise LogError("change outside a transaction", lsn=change.lsn)
        size = len(change.raw)
        if size * 4 + RECORD_OVERHEAD > self._max_record:
            size = self._check_size(change)
        if self._chunk and self._chunk_bytes + size > self._chunk_limit:
            self._emit_chunk()
        if self._buf and self._buf_bytes + self._chunk_bytes + size > BUFFER_BYTES:
            self._send()  # the writer holds at most ~1 MiB of records, whatever the transaction
        self._chunk.append((change.seq, change.lsn.value, change.action, change.schema, change.table, change.raw))
        self._chunk_bytes += size + 48
        key = (change.schema, change.table, change.action)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._n += 1
        if len(self._chunk) >= CHUNK_CHANGES:
            self._emit_chunk()

    def _check_size(self, change: Change) -> int:
        size = len(change.raw.encode())
        if size + RECORD_OVERHEAD > self._max_record:
            raise ChangeTooLargeError(
                f"a change of {change.relation} is {size} bytes; the topic {self.topic} stores records "
                f"of at most {self._max_record} bytes (max.message.bytes)",
                hint="raise the topic's max.message.bytes (and the brokers' replica.fetch.max.bytes) above "
                     "it, then restart capture: it resumes from the slot's confirmed position",
                relation=change.relation, lsn=change.lsn, commit_lsn=self._open)
        return size

    def _emit_chunk(self) -> None:
        if not self._begun:  # written lazily: an empty transaction leaves nothing in the topic
            self._put((None, b"", [("type", BEGIN), *self._txn_headers]))
            self._begun = True
        chunk, self._chunk, self._chunk_bytes = self._chunk, [], 0
        first = chunk[0]
        label = f"{len(chunk)} changes from {first[3]}.{first[4]} at LSN {Lsn(first[1])} (commit {self._open})"
        self._put((None, encode_chunk(chunk), [
            ("type", CHUNK), *self._txn_headers, ("i", b"%d" % self._i), ("n", b"%d" % len(chunk))]), label)
        self._i += len(chunk)

    def commit(self, commit_time: str | None) -> None:
        if self._open is None:
            raise LogError("commit outside a transaction")
        if not self._skip and self._n:
            if self._chunk:
                self._emit_chunk()
            counts: dict[str, dict[str, int]] = {}
            for (schema, table, action), k in self._counts.items():
                counts.setdefault(f"{schema}.{table}", {})[ACTION_NAMES.get(action, action)] = k
            marker = json.dumps({"n": self._n, "commit_time": commit_time, "counts": counts})
            extra = [("n", b"%d" % self._n), ("commit_time", (commit_time or "").encode())]
            self._put((None, marker.encode(), [("type", COMMIT), *self._txn_headers, *extra]))
            assert self._acct is not None
            self._acct.own_commit(self._open.value, commit_time, counts)
        self._pending_commit, self._open = self._open, None
        self._skip, self._counts, self._begun = False, {}, False

    def sync(self) -> Lsn | None:
        if self.readonly:
            return self._durable
        self._send()
        self._io.flush(SYNC_WAIT)  # acks=all for every record handed over, or LogUnavailableError
        if self._lease is not None:
            self._lease.renew()  # ours still, or WriterFencedError: nothing more is confirmed
            if time.monotonic() - self._snapshot_at >= SNAPSHOT_EVERY:
                self._snapshot()
        if self._pending_commit is not None:
            self._durable = max(self._durable or self._pending_commit, self._pending_commit)
            self._pending_commit = None
        return self._durable

    # -- reading -----------------------------------------------------------------------------
    def _scan(self, index: Index) -> int:
        end = self._io.end_offset(self.topic)
        for chunk in self._io.read(self.topic, index.scanned, end):
            index.add(chunk)
        index.scanned = max(index.scanned, end)
        return end

    def _complete(self, after: Lsn | None) -> Iterator[tuple[Cursor, int, tuple[Any, ...]]]:
        """Each complete transaction past `after` in commit order, with a cursor to read it."""
        end = self._scan(self._full)
        floor = after.value if after is not None else -1
        cursor = Cursor(self._io, self.topic, end)
        try:
            for lsn in sorted(k for k in self._full.complete if k > floor):
                yield cursor, lsn, self._full.complete[lsn]
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
        """From the counts snapshot plus the records after it: no full read of the topic."""
        ix = self._accounting()
        tables = {rel: {a: 0 for a in ACTION_NAMES.values()} | per for rel, per in ix.counts.items()}
        holes = [(Lsn(k), seen, n) for k, (seen, n) in sorted(ix.holes.items()) if not ix.has(k)]
        return LogSummary(ix.transactions, ix.first_time, ix.last_time, ix.last_lsn(), tables, holes)

    def size_bytes(self) -> int:
        """Keys and values of the log's records as written (before compression)."""
        return self._accounting().bytes

    # -- manifest and state --------------------------------------------------------------------
    def get_state(self, key: str) -> Any:
        for r in self._io.tail(self.state_topic):
            if r.value is None:
                self._state.pop(r.key.decode(), None)
            else:
                self._state[r.key.decode()] = json.loads(r.value)
        return self._state.get(key)

    def set_state(self, key: str, value: Any) -> None:
        """Durable on return (acks=all); the latest record of a key wins."""
        self._writable()
        self._send()
        self._io.send_and_wait(self.state_topic, (key.encode(), json.dumps(value).encode(), []), SYNC_WAIT * 6)

    def close(self) -> None:
        self._io.close()


class _WriterLock(DaemonLock):
    """The local lock (one daemon per host, fast) and the lease in the state topic (one writer
    across hosts); released in reverse order."""

    def __init__(self, log: KafkaLog) -> None:
        super().__init__(log.lock_path)
        self._log = log

    def acquire(self) -> DaemonLock:
        super().acquire()
        try:
            self._log._take_lease()
        except BaseException:
            super().release()
            raise
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self._log._drop_lease()
        finally:
            super().release()


__all__ = ["KafkaLog", "default_topic"]
