"""The capture daemon: stream the slot into the change log, make it durable, then confirm.

Order of durability: a change is written to the log as it arrives; a group of transactions is made
durable by ``ChangeLog.sync()``; only then is the highest durable commit LSN confirmed to the slot.
``step()`` is one public unit of work, so tests drive the loop without sleeping.
"""

from __future__ import annotations

import json
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import psycopg2
import psycopg2.errors

from pgcarry import progress as prog
from pgcarry.capture import failure, forecast, identity, replication
from pgcarry.capture.metrics import Metrics
from pgcarry.capture.routing import Router
from pgcarry.changelog import ChangeLog
from pgcarry.changelog.integrity import CAPTURE_STOPPED
from pgcarry.errors import (CaptureStoppedError, LogError, LogFullError, LogUnavailableError,
                            PreflightError, SlotError)
from pgcarry.schemas.change import Change
from pgcarry.schemas.dsn import redact
from pgcarry.schemas.lsn import Lsn
from pgcarry.schemas.manifest import Manifest

log = logging.getLogger(__name__)

SYNC_INTERVAL = 0.25  # seconds of streaming between group commits
SYNC_CHANGES = 50_000  # ... or this many changes, whichever comes first
IDLE_WAIT = 0.5  # seconds to wait for the server when nothing is pending
FEEDBACK_INTERVAL = 1.0  # while waiting for --until, ask the server for its position this often
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
STATUS_INTERVAL = 10  # psycopg2 keepalive feedback, seconds


def slot_position(dsn: str, slot: str) -> tuple[Lsn | None, Lsn]:
    """(the slot's confirmed_flush_lsn or None when the slot is gone, pg_current_wal_lsn())."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s),"
            "       pg_current_wal_lsn()::text",
            (slot,),
        ).fetchone()
    assert row is not None
    return (Lsn.parse(row[0]) if row[0] else None), Lsn.parse(row[1])


# the slot does not exist, or was invalidated: no reconnect can help
_SLOT_GONE = (psycopg2.errors.UndefinedObject, psycopg2.errors.ObjectNotInPrerequisiteState)
_ROW_ACTIONS = frozenset("IUDT")
_ACTION_AT = len('{"action":"')
_SCHEMA_KEY, _TABLE_KEY = '"schema":"', '","table":"'


def _relation(raw: str) -> tuple[str, str]:
    """Schema and table of a wal2json v2 row change without parsing its (possibly large) images:
    the header fields come first, in a fixed order; escaped names take the JSON path."""
    i = raw.find(_SCHEMA_KEY)
    j = raw.find(_TABLE_KEY, i)
    k = raw.find('"', j + len(_TABLE_KEY))
    schema, table = raw[i + len(_SCHEMA_KEY):j], raw[j + len(_TABLE_KEY):k]
    if i < 0 or j < 0 or k < 0 or "\\" in schema or "\\" in table:
        doc = json.loads(raw)
        return doc["schema"], doc["table"]
    return schema, table


@dataclass
class Progress:
    transactions: int = 0
    changes: int = 0
    position: Lsn | None = None  # the stream is complete in the log up to here
    confirmed: Lsn | None = None  # what the slot was last told


class Capture:
    def __init__(
        self, dsn: str, slot: str, changelog: ChangeLog, manifest: Manifest,
        metrics: Metrics | None = None, progress: prog.Progress = prog.NULL,
        wal_samples: bool = True,
    ) -> None:
        self.dsn, self.slot, self.log, self.options = dsn, slot, changelog, manifest.plugin_options
        self.metrics, self.reporter = metrics, progress
        self.router = Router(manifest, dsn, changelog)
        self._routes = self.router.routes  # the hot path's lookup
        self.watch = identity.Watch(changelog, self.router.routes)
        self._commit: Lsn | None = None  # of the transaction being read
        self.progress = Progress()
        self.wal = forecast.WalSamples.from_state(changelog.get_state(forecast.SAMPLES_KEY))
        self._next_sample = 0.0 if wal_samples else float("inf")  # off: no connection but the stream
        self._conn: psycopg2.extensions.connection | None = None
        self._cur: psycopg2.extras.ReplicationCursor | None = None
        self._in_txn = False
        self._duplicate = False
        self._seq = 0
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self._last_feedback = 0.0
        self.until: Lsn | None = None  # stop reading once the stream is complete up to here

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        self.close()
        self._conn = replication.connect(self.dsn)
        self._cur = self._conn.cursor()
        try:
            self._cur.start_replication_expert(
                replication.start_command(self.slot, self.options).as_string(self._conn), decode=False,
                status_interval=STATUS_INTERVAL,
            )
        except _SLOT_GONE as e:
            self.close()
            raise SlotError(
                f"replication slot {self.slot!r} cannot stream: {redact(str(e).strip())}",
                hint="the log is complete only up to its last position; see `pgcarry status`",
            ) from None
        self._conn.notices = []  # wal2json warns when it drops a change without a replica identity
        try:
            self.log.slot_acquired()
        except BaseException:
            self.close()  # streamed again once the log answers
            raise
        self._in_txn = False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
        self._conn = self._cur = None

    # -- one unit of work ------------------------------------------------------------------
    def step(self, timeout: float = IDLE_WAIT) -> int:
        """Read what the server has (up to one group commit), make it durable and confirm it;
        wait up to `timeout` when nothing came. Returns the number of messages handled."""
        assert self._cur is not None and self._conn is not None
        handled = 0
        while not (self.until is not None and self._reached(self.until)):
            msg = self._cur.read_message()
            if msg is None:
                break
            self._handle(msg)
            handled += 1
            if self._unsynced >= SYNC_CHANGES or time.monotonic() - self._last_sync >= SYNC_INTERVAL:
                break
        if handled == 0:
            self._idle_position()
        self._dropped_changes()
        self.sync()
        if handled == 0:
            select.select([self._conn], [], [], timeout)
        return handled

    def _handle(self, msg: psycopg2.extras.ReplicationMessage) -> None:
        raw = msg.payload.decode("utf-8")
        action = raw[_ACTION_AT]  # wal2json v2 opens every message with {"action":"X"
        if action in _ROW_ACTIONS:
            lsn = Lsn(msg.data_start)
            name = _relation(raw)
            route = self._routes.get(name) or self.router.route(*name, lsn)
            if route is None:
                return
            if action != "I" and not self.watch.change(route, action, raw, lsn):
                return
            change = Change(self._seq, lsn, action, route.schema, route.table, raw)
            self.log.append(change)
            self._seq += 1
            self._unsynced += 1
            if not self._duplicate:
                self.progress.changes += 1
                if self.metrics:
                    self.metrics.change(change.relation, action)
            return
        doc = json.loads(raw)
        if action == "B":
            self._in_txn = True
            self._seq = 0
            self.router.transaction()
            # a transaction re-sent after a restart is stored once; count it once too
            self._commit = Lsn.parse(doc["nextlsn"])
            self._duplicate = not self.log.begin(int(doc["xid"]), self._commit)
        elif action == "C":
            self.log.commit(doc.get("timestamp"))
            self._in_txn = False
            self._advance(Lsn(msg.data_start))
            if not self._duplicate and self._seq > 0:  # empty transactions are not counted
                self.progress.transactions += 1
                if self.metrics:
                    self.metrics.commit(doc.get("timestamp"))
        # "M" (logical decoding messages) are not captured

    def _dropped_changes(self) -> None:
        """psycopg2 hands notices (wal2json's warnings) over when the connection is polled."""
        assert self._conn is not None
        self._conn.poll()
        if self._conn.notices:
            self.watch.notices(self._conn.notices, self._commit or self.progress.position)
            self._conn.notices.clear()

    def _advance(self, lsn: Lsn) -> None:
        if self.progress.position is None or lsn > self.progress.position:
            self.progress.position = lsn

    def _idle_position(self) -> None:
        """Between transactions, the server's wal_end is a position the stream is complete to."""
        if not self._in_txn and self._cur is not None and self._cur.wal_end:
            self._advance(Lsn(self._cur.wal_end))

    def sync(self) -> None:
        """Make the log durable, then confirm to the slot what is durable."""
        durable = self.log.sync()
        self._unsynced = 0
        self._last_sync = time.monotonic()
        target = durable
        if not self._in_txn and self.progress.position is not None:
            target = self.progress.position if durable is None else max(durable, self.progress.position)
        if target is not None and (self.progress.confirmed is None or target > self.progress.confirmed):
            assert self._cur is not None
            self._cur.send_feedback(write_lsn=target.value, flush_lsn=target.value, force=True)
            self.progress.confirmed = target
            if self.metrics:
                self.metrics.confirmed(target)

    def request_position(self) -> None:
        """Ask the server for a keepalive (its current wal_end), at most once per interval."""
        now = time.monotonic()
        if self._cur is not None and now - self._last_feedback >= FEEDBACK_INTERVAL:
            self._cur.send_feedback(reply=True)
            self._last_feedback = now

    def _await_ack(self, timeout: float = 2.0) -> None:
        """Ask for a keepalive and wait for it: the server has then read our last confirmation."""
        assert self._cur is not None and self._conn is not None
        before = self._cur.io_timestamp
        self._cur.send_feedback(reply=True, force=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._cur.read_message() is None and self._cur.io_timestamp != before:
                return
            select.select([self._conn], [], [], 0.1)

    def sample_wal(self) -> None:
        """At most once per forecast.SAMPLE_INTERVAL, between transactions: store the source's
        pg_current_wal_lsn() with the time in the log's state, from which `status` and the
        metrics tell the WAL rate. A failure only skips the sample."""
        if self._in_txn or time.monotonic() < self._next_sample:
            return
        self._next_sample = time.monotonic() + forecast.SAMPLE_INTERVAL
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            self.wal.add(time.time(), Lsn.parse(row[0]).value)
            self.log.set_state(forecast.SAMPLES_KEY, self.wal.to_state())
        except (psycopg.Error, LogError) as e:
            log.debug("WAL sample skipped: %s", redact(str(e)))

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, until: Lsn | None = None, stop: Callable[[], bool] = lambda: False,
            busy_timeout: float | None = None) -> Progress:
        """Stream until `stop()` is true or the log is complete up to `until` (the WAL left to it
        is shown as a task). Reconnects with capped backoff when the source goes away; a lost
        slot is fatal (SlotError), and so is a slot another process streams for more than
        `busy_timeout` seconds (the cutover's drain)."""
        backoff = BACKOFF_START
        busy_since: float | None = None
        self.until = until
        drain = prog.NULL.task("capture")  # the daemon itself runs for days: no amount to show
        if until is not None:
            confirmed, _ = slot_position(self.dsn, self.slot)
            if confirmed is not None:
                self._advance(confirmed)
                self.progress.confirmed = confirmed
            start = (self.progress.position or until).value
            drain = self.reporter.task(f"drain to {until}", total=max(until.value - start, 0),
                                       unit=prog.BYTES)
        while not stop():
            try:
                if self._conn is None:
                    self.connect()
                    backoff, busy_since = BACKOFF_START, None
                if until is not None and self._reached(until):
                    break
                if self.step() == 0 and until is not None:
                    self.request_position()
                if until is not None and self.progress.position is not None:
                    drain.update(min(self.progress.position.value, until.value) - start)
                self.sample_wal()
                self.router.check(self.progress.position)
            except LogFullError as e:
                log.warning("change log cannot be written, confirming nothing; re-reading the slot in "
                            "%.1fs: %s", backoff, e)
                self.close()  # what was not durable is re-sent from the slot's confirmed position
                self._in_txn, self.progress.position = False, self.progress.confirmed
                backoff = self._wait(backoff, stop, self.log.keepalive)
            except LogUnavailableError as e:
                log.warning("change log unavailable, retrying in %.1fs: %s", backoff, e)
                backoff = self._wait(backoff, stop, self.log.keepalive)
            except (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.DatabaseError,
                    psycopg.OperationalError) as e:
                if isinstance(e, _SLOT_GONE):
                    raise SlotError(f"replication slot {self.slot!r} was lost: {redact(str(e).strip())}") from None
                if isinstance(e, psycopg2.errors.ObjectInUse) and busy_timeout is not None:
                    busy_since = busy_since or time.monotonic()
                    if time.monotonic() - busy_since > busy_timeout:
                        raise SlotError(
                            f"replication slot {self.slot!r} stayed in use by another process for "
                            f"{busy_timeout:.0f}s: {redact(str(e).strip())}",
                            hint="another capture daemon streams it: stop it (see `pgcarry status`), "
                                 "then run the command again") from None
                self._fatal(e)
                log.warning("source connection lost, reconnecting in %.1fs: %s", backoff, redact(str(e).strip()))
                self.close()
                self.router.close()
                backoff = self._wait(backoff, stop, self.log.keepalive)
        self._finish()
        drain.close()
        return self.progress

    def _fatal(self, e: Exception) -> None:
        """Stop on a server error that repeats at the same LSN on every retry (capture/failure.py);
        a change too large is recorded in the log, so status, replay and cutover say so."""
        d = getattr(e, "diag", None)
        f = failure.classify(d.message_primary or str(e), d.message_detail, d.context) if d else None
        if f is None:
            return
        self.close()
        if f.kind == "plugin":
            raise PreflightError(f"wal2json refused the stream: {f.message}",
                                 hint="check the wal2json version and [capture] tables") from None
        table = failure.relation_at(self.dsn, f.lsn) if f.lsn else None
        self.log.set_state(CAPTURE_STOPPED, {"kind": f.kind, "message": f.message, "lsn": f.lsn,
                                             "table": table, "seen_at": time.time()})
        raise CaptureStoppedError(
            f"a change is too large for wal2json to decode ({f.message}); the slot cannot stream "
            "past it", table=table or "unknown (pg_walinspect on the source names it)", lsn=f.lsn,
            hint="exclude that table ([capture] exclude) and take a new T0; or, losing that "
                 f"transaction knowingly, SELECT pg_replication_slot_advance('{self.slot}', <its "
                 "commit LSN>) and pass --allow-incomplete to replay") from None

    def _reached(self, until: Lsn) -> bool:
        return not self._in_txn and self.progress.position is not None and self.progress.position >= until

    @staticmethod
    def _wait(backoff: float, stop: Callable[[], bool], keepalive: Callable[[], None]) -> float:
        deadline = time.monotonic() + backoff
        while time.monotonic() < deadline and not stop():
            keepalive()
            time.sleep(0.1)
        return min(backoff * 2, BACKOFF_MAX)

    def _finish(self) -> None:
        """Last batch: durable, confirmed, connection closed."""
        try:
            if self._conn is not None:
                self.sync()
                self._await_ack()
            else:
                self.log.sync()
            self.router.check(self.progress.position, force=True)
        except (psycopg2.Error, psycopg.Error, LogUnavailableError) as e:
            log.warning("final sync incomplete: %s", redact(str(e)))
        finally:
            self.close()
            self.router.close()
