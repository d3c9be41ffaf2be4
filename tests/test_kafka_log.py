"""KafkaLog against a real Apache Kafka broker: round trip, duplicates, incomplete tails, bounded
writer memory, manifest/state in the topic, summary counts, and a 10-second broker outage."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import pytest

from pgcarry.changelog import open_log
from pgcarry.changelog.kafka import BUFFER_BYTES, KafkaLog
from pgcarry.changelog.kafka_io import KafkaIO
from pgcarry.errors import LogError, LogUnavailableError
from pgcarry.schemas.change import Change
from pgcarry.schemas.config import KafkaConfig, LogConfig
from pgcarry.schemas.lsn import Lsn
from pgcarry.schemas.manifest import Manifest
from tests.kafka_fixture import kafka_broker, kafka_config, private_kafka  # noqa: F401

pytestmark = pytest.mark.kafka

ORDERS = '[{"name":"id","type":"bigint"}]'


def ins(seq: int, lsn: int, oid: int, status: str = "new", total: str = "12.50") -> Change:
    raw = (
        '{"action":"I","schema":"public","table":"orders","columns":['
        f'{{"name":"id","type":"bigint","value":{oid}}},'
        f'{{"name":"status","type":"text","value":{json.dumps(status)}}},'
        f'{{"name":"total","type":"numeric(10,2)","value":{total}}}],"pk":{ORDERS}}}'
    )
    return Change(seq, Lsn(lsn), "I", "public", "orders", raw)


def upd(seq: int, lsn: int, oid: int, old: str, new: str) -> Change:
    raw = (
        '{"action":"U","schema":"public","table":"orders","columns":['
        f'{{"name":"id","type":"bigint","value":{oid}}},{{"name":"status","type":"text","value":"{new}"}}],'
        f'"identity":[{{"name":"id","type":"bigint","value":{oid}}},'
        f'{{"name":"status","type":"text","value":"{old}"}}],"pk":{ORDERS}}}'
    )
    return Change(seq, Lsn(lsn), "U", "public", "orders", raw)


def dele(seq: int, lsn: int, item: int) -> Change:
    raw = (
        '{"action":"D","schema":"shop","table":"order_items","identity":['
        f'{{"name":"order_id","type":"bigint","value":7}},{{"name":"line","type":"integer","value":{item}}}],'
        '"pk":[{"name":"order_id","type":"bigint"},{"name":"line","type":"integer"}]}'
    )
    return Change(seq, Lsn(lsn), "D", "shop", "order_items", raw)


def trunc(seq: int, lsn: int) -> Change:
    return Change(seq, Lsn(lsn), "T", "public", "coupons", '{"action":"T","schema":"public","table":"coupons"}')


TXNS = [  # (xid, commit LSN, commit time, changes)
    (501, 0x1000, "2026-11-20 10:00:00.1+00", [ins(1, 0xF00, 1), ins(2, 0xF10, 2, "new", "0.10")]),
    (502, 0x2000, "2026-11-20 10:00:01+00", [upd(1, 0x1F00, 1, "new", "shipped"), dele(2, 0x1F10, 3)]),
    (503, 0x3000, "2026-11-20 10:00:02+00", [trunc(1, 0x2F00), ins(2, 0x2F10, 3, 'quote " ü 你好', "99999999.99")]),
]


def write(log: KafkaLog, txns: list, *, sync: bool = True) -> Lsn | None:
    for xid, commit, ctime, changes in txns:
        if log.begin(xid, Lsn(commit)):
            for c in changes:
                log.append(c)
        log.commit(ctime)
    return log.sync() if sync else None


def as_tuples(log: KafkaLog, after: Lsn | None = None) -> list:
    return [(t.xid, t.commit_lsn.value, t.commit_time, t.n_changes, list(t.changes)) for t in log.transactions(after)]


def expected(txns: list) -> list:
    return [(x, c, t, len(ch), ch) for x, c, t, ch in txns]


def test_round_trip(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    with KafkaLog(cfg, slot="s", create=True) as log:
        assert write(log, TXNS) == Lsn(0x3000)
        assert write(log, [(504, 0x4000, "2026-11-20 10:00:03+00", [])]) == Lsn(0x4000)  # empty moves it
        assert as_tuples(log) == expected(TXNS)
    with open_log(LogConfig(backend="kafka", kafka=cfg), slot="s", readonly=True) as reader:
        assert as_tuples(reader) == expected(TXNS)  # type: ignore[arg-type]
        assert as_tuples(reader, Lsn(0x1000)) == expected(TXNS[1:])  # type: ignore[arg-type]
        got = next(iter(reader.transactions(Lsn(0x2000))))
        assert got.changes[1].new == {"id": 3, "status": 'quote " ü 你好', "total": __import__("decimal").Decimal("99999999.99")}  # type: ignore[index]


def test_resent_transaction_is_read_once(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    first = KafkaLog(cfg, slot="s", create=True)
    second = KafkaLog(cfg, slot="s")  # opened before the first wrote: it cannot know, stores again
    write(first, TXNS[:2])
    write(second, TXNS[1:])
    first.close()
    second.close()
    with KafkaLog(cfg, slot="s") as log:
        assert as_tuples(log) == expected(TXNS)
        assert log.begin(502, Lsn(0x2000)) is False  # a restarted writer skips what the topic holds
        log.append(TXNS[1][3][0])
        log.commit(None)
        assert log.sync() == Lsn(0x3000)
        assert log.summary().transactions == 3
        assert as_tuples(log) == expected(TXNS)


def test_incomplete_tail_is_never_read(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    with KafkaLog(cfg, slot="s", create=True) as log:
        write(log, TXNS[:1])
        xid, commit, _, changes = TXNS[1]
        assert log.begin(xid, Lsn(commit))
        log.append(changes[0])
        assert log.sync() == Lsn(0x1000)  # the open transaction is in Kafka but not complete
        assert as_tuples(log) == expected(TXNS[:1])
        assert log.summary().transactions == 1
    with KafkaLog(cfg, slot="s") as log:  # a restart re-sends it whole
        write(log, TXNS[1:])
        assert as_tuples(log) == expected(TXNS)


def test_large_transaction_is_streamed_with_bounded_memory(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    n, filler = 50_000, "x" * 400
    total = 0
    with KafkaLog(cfg, slot="s", create=True) as log:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        assert log.begin(900, Lsn(0x9_0000_0000))
        for i in range(1, n + 1):
            c = ins(i, 0x8_0000_0000 + i, i, filler)
            total += len(c.raw)
            log.append(c)
        log.commit("2026-11-20 11:00:00+00")
        assert log.sync() == Lsn(0x9_0000_0000)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        assert total > 20_000_000
        assert log.max_buffered_bytes <= BUFFER_BYTES + 1000
        assert peak < 12_000_000, f"writer peak {peak} bytes for {total} bytes of changes"
        (txn,) = log.transactions()
        assert txn.n_changes == n and not isinstance(txn.changes, list)  # read lazily
        seen = 0
        for i, c in enumerate(txn.changes, 1):
            assert (c.seq, c.lsn.value) == (i, 0x8_0000_0000 + i)
            seen += 1
        assert seen == n
        assert c == ins(n, 0x8_0000_0000 + n, n, filler)


def test_large_value_round_trips(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    big = ins(1, 0x100, 1, "ü" * 3_000_000)  # ~6 MB of TOASTed text
    with KafkaLog(cfg, slot="s", create=True) as log:
        write(log, [(1, 0x200, None, [big])])
        assert as_tuples(log) == [(1, 0x200, None, 1, [big])]


def test_manifest_and_state_live_in_kafka(kafka_broker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = kafka_config(kafka_broker.bootstrap)
    manifest = Manifest(
        slot="s", plugin_options={"format-version": "2"}, consistent_point="0/16B2F18",
        snapshot="00000003-00000002-1", created_at="2026-11-20T09:59:59Z",
        system_identifier="7301", database="shop", tables={},
    )
    with KafkaLog(cfg, slot="s", create=True) as log:
        assert log.read_manifest() is None and log.get_state("cutover") is None
        log.write_manifest(manifest)
        log.set_state("cutover", {"phase": "fenced", "lsn": "0/3000"})
        log.set_state("cutover", {"phase": "drained", "lsn": "0/4000"})
    with KafkaLog(cfg, slot="s", readonly=True) as log:
        assert log.read_manifest() == manifest
        assert log.get_state("cutover") == {"phase": "drained", "lsn": "0/4000"}
        with pytest.raises(LogError, match="read-only"):
            log.set_state("x", 1)
    assert list(tmp_path.iterdir()) == []  # nothing local


def test_summary_counts(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    with KafkaLog(cfg, slot="s", create=True) as log:
        write(log, TXNS)
        log.begin(600, Lsn(0x5000))
        log.append(ins(1, 0x4F00, 9))  # an incomplete tail: not counted
        log.sync()
        s = log.summary()
        assert (s.transactions, s.last_commit_lsn) == (3, Lsn(0x3000))
        assert (s.first_commit_time, s.last_commit_time) == ("2026-11-20 10:00:00.1+00", "2026-11-20 10:00:02+00")
        zero = {"insert": 0, "update": 0, "delete": 0, "truncate": 0}
        assert s.tables == {
            "public.orders": zero | {"insert": 3, "update": 1},
            "shop.order_items": zero | {"delete": 1},
            "public.coupons": zero | {"truncate": 1},
        }
        assert log.size_bytes() > sum(len(c.raw) for t in TXNS for c in t[3])


def test_missing_topic_is_an_error(kafka_broker):
    with pytest.raises(LogError, match="does not exist"):
        KafkaLog(kafka_config(kafka_broker.bootstrap), slot="s")


def test_topic_that_may_lose_changes_is_refused_before_anything_is_created(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    state = f"{cfg.topic}-state"
    io = KafkaIO(cfg.bootstrap_servers, {})
    try:
        io.create_topic(cfg.topic or "", 1, {"retention.ms": str(7 * 86400_000)})
        with pytest.raises(LogError, match=r"may lose captured changes \(retention.ms=604800000\)"):
            KafkaLog(cfg, slot="s", create=True)
        assert state not in io.topics()  # refused before the state topic was created
        strict = KafkaConfig(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)  # no single-broker
        with pytest.raises(LogError, match=r"topic t[-\d]+ may lose captured changes \(replication "
                           r"factor 1 with min.insync.replicas=1, retention.ms=604800000\)"):
            KafkaLog(strict, slot="s", create=True)
        assert state not in io.topics()
        io.create_topic(state, 1, {"cleanup.policy": "compact"})
    finally:
        io.close()
    KafkaLog(cfg, slot="s", readonly=True).close()  # reading what is there is fine
    KafkaLog(strict, slot="s", readonly=True).close()


@pytest.mark.slow
def test_broker_outage_pauses_writes_and_loses_nothing(private_kafka):
    cfg = kafka_config(private_kafka.bootstrap)
    txns = [(1000 + i, 0x10000 * (i + 1), f"2026-11-20 12:00:{i:02d}+00",
             [ins(j, 0x10000 * (i + 1) - 0x100 + j, i * 100 + j) for j in range(1, 51)]) for i in range(60)]
    synced: list[tuple[float, Lsn | None]] = []
    errors: list[BaseException] = []
    unavailable: list[float] = []
    log = KafkaLog(cfg, slot="s", create=True)

    def writer() -> None:  # what the capture daemon does: sync until it succeeds, then go on
        try:
            for t in txns:
                write(log, [t], sync=False)
                while True:
                    try:
                        lsn = log.sync()
                        break
                    except LogUnavailableError:
                        unavailable.append(time.monotonic())
                synced.append((time.monotonic(), lsn))
                time.sleep(0.1)
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(synced) < 20 and thread.is_alive():
            time.sleep(0.05)
        private_kafka.stop()
        down = time.monotonic()
        time.sleep(10)
        assert len(synced) <= 21, "a sync returned while the broker was down"
        private_kafka.start()
        up = time.monotonic()
        thread.join(180)
        assert not thread.is_alive() and not errors, errors or private_kafka.log_tail()
        assert [lsn for _, lsn in synced] == [Lsn(t[1]) for t in txns]
        assert synced[21][0] >= down + 10  # the sync in flight at the stop returned after the restart
        assert unavailable and all(down < at < up + 10 for at in unavailable)  # reported, then recovered
    finally:
        log.close()
    with KafkaLog(cfg, slot="s", readonly=True) as reader:
        assert as_tuples(reader) == expected(txns)
    private_kafka.stop()
    started = time.monotonic()
    with pytest.raises(LogUnavailableError, match="kafka unreachable"):
        KafkaLog(cfg, slot="s", readonly=True)  # `status` with the broker away: an error, not a hang
    assert time.monotonic() - started < 90


def test_raw_changes_match_transactions(kafka_broker):
    cfg = kafka_config(kafka_broker.bootstrap)
    with KafkaLog(cfg, slot="s", create=True) as log:
        write(log, TXNS)
        want = [(c, ch.lsn.value, ch.action, ch.schema, ch.table, ch.raw) for _, c, _, chs in TXNS for ch in chs]
        assert list(log.raw_changes()) == want
        assert list(log.raw_changes(Lsn(0x2000))) == want[4:]


def big_txn(xid: int, commit: int, n: int) -> tuple:
    return (xid, commit, "2026-11-20 13:00:00+00", [ins(j, commit - 0x1000 + j, j) for j in range(n)])


def test_copy_with_a_missing_chunk_is_not_complete_until_resent(kafka_broker, monkeypatch):
    """A failed batch followed by a delivered marker: the copy reads as incomplete, not as complete
    with a hole, and the writer that re-sends it stores it whole."""
    from pgcarry.capture.status import status

    cfg = kafka_config(kafka_broker.bootstrap)
    holed = big_txn(700, 0x1800, 2500)  # between TXNS[0] and TXNS[1], in stream order
    # its chunks hold changes 0-999, 1000-1999 and 2000-2499
    real_put = KafkaLog._put

    def lose_middle_chunk(self, record, label=None):  # type: ignore[no-untyped-def]
        if dict(record[2]).get("i") == b"1000":
            return
        real_put(self, record, label)

    with KafkaLog(cfg, slot="s", create=True) as log:
        write(log, TXNS[:1])
        monkeypatch.setattr(KafkaLog, "_put", lose_middle_chunk)
        write(log, [holed])
        monkeypatch.setattr(KafkaLog, "_put", real_put)
        write(log, TXNS[1:2])
    with KafkaLog(cfg, slot="s", readonly=True) as reader:
        assert as_tuples(reader) == expected(TXNS[:2])
        s = reader.summary()
        assert (s.transactions, s.tables["public.orders"]["insert"]) == (2, 2)
        assert s.holes == [(Lsn(0x1800), 1500, 2500)]
        assert status(reader, None, "s")["warnings"] == [
            "INCOMPLETE COPY: the transaction committed at 0/1800 has 1500 of its 2500 changes in the "
            "log; it is not read until capture re-sends it whole"]
    with KafkaLog(cfg, slot="s") as log:  # the restarted writer does not take the hole for the copy
        assert log.begin(700, Lsn(0x1800)) is True
        for c in holed[3]:
            log.append(c)
        log.commit(holed[2])
        log.sync()
    with KafkaLog(cfg, slot="s", readonly=True) as reader:
        assert as_tuples(reader) == expected(sorted([*TXNS[:2], holed], key=lambda t: t[1]))
        assert reader.summary().holes == [] and reader.summary().transactions == 3


def test_status_reads_the_counts_snapshot_not_the_topic(kafka_broker, monkeypatch):
    cfg = kafka_config(kafka_broker.bootstrap)
    txns = [big_txn(800 + i, 0x100000 * (i + 1), 300) for i in range(20)]
    with KafkaLog(cfg, slot="s", create=True) as log, log.lock():  # the daemon's way: with the lease
        write(log, txns[:10])
        log.begin(899, Lsn(0xA80000))  # in flight across the snapshot the lock leaves behind
        for c in big_txn(899, 0xA80000, 1500)[3][:1200]:
            log.append(c)
        log.sync()
    read_records: list[int] = []
    real_read = KafkaIO.read

    def counting_read(self, topic, start, end):  # type: ignore[no-untyped-def]
        for chunk in real_read(self, topic, start, end):
            if not topic.endswith("-state"):
                read_records.extend(r.offset for r in chunk)
            yield chunk

    monkeypatch.setattr(KafkaIO, "read", counting_read)
    with KafkaLog(cfg, slot="s", readonly=True) as reader:
        s = reader.summary()
        assert read_records == []  # nothing but the snapshot
        assert (s.transactions, s.tables["public.orders"]["insert"]) == (10, 3000)
    with KafkaLog(cfg, slot="s") as log, log.lock():  # the next writer, from the snapshot too
        assert read_records == []
        assert log.begin(810, Lsn(txns[9][1])) is False  # known complete without a read
        log.commit(None)
        write(log, txns[10:])
    with KafkaLog(cfg, slot="s", readonly=True) as reader:
        s = reader.summary()
        monkeypatch.setattr(KafkaIO, "read", real_read)
        full = [t.n_changes for t in reader.transactions()]
    assert (s.transactions, s.tables["public.orders"]["insert"], full) == (20, 6000, [300] * 20)
    assert s.last_commit_lsn == Lsn(txns[-1][1]) and s.holes == []


def test_change_larger_than_the_topic_allows_is_fatal_with_table_and_lsn(kafka_broker):
    from pgcarry.errors import ChangeTooLargeError

    cfg = kafka_config(kafka_broker.bootstrap)
    io = KafkaIO(cfg.bootstrap_servers, {})
    try:
        io.create_topic(cfg.topic or "", 1, {"max.message.bytes": "100000", "retention.ms": "-1"})
    finally:
        io.close()
    with KafkaLog(cfg, slot="s", create=True) as log:
        write(log, [(1, 0x1000, None, [ins(1, 0x900, 1, "y" * 90_000)])])  # fits, alone in a chunk
        log.begin(2, Lsn(0x2000))
        with pytest.raises(ChangeTooLargeError, match=r"a change of public.orders is 200\d\d\d bytes; the "
                           r"topic t[-\d]+ stores records of at most 100000 bytes .*lsn=0/1F00"):
            log.append(ins(1, 0x1F00, 2, "z" * 200_000))
        assert log.sync() == Lsn(0x1000)
    with KafkaLog(cfg, slot="s", readonly=True) as reader:
        assert [t.commit_lsn for t in reader.transactions()] == [Lsn(0x1000)]


def test_topic_of_the_previous_record_format_is_refused(kafka_broker):
    """A log written by record format 1 (one record per change, no `format` state) is never misread."""
    cfg = kafka_config(kafka_broker.bootstrap)
    with KafkaLog(cfg, slot="s", create=True) as log:
        log.set_state("format", None)  # as format 1 left it: a manifest and no format
        log.set_state("manifest", {"slot": "s"})
    for readonly in (True, False):
        with pytest.raises(LogError, match=r"holds Kafka log format 1, this pgcarry reads 2 .*take a new T0"):
            KafkaLog(cfg, slot="s", readonly=readonly)
