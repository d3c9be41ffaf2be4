"""Commit markers vs Kafka transactions for the Kafka change log: the measurement behind
docs/kafka.md. Starts its own local broker (`make kafka` first); prints one line per case."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pgcarry.changelog.kafka import KafkaLog
from pgcarry.playground.localkafka import LocalKafka
from pgcarry.schemas.change import Change
from pgcarry.schemas.config import KafkaConfig
from pgcarry.schemas.lsn import Lsn

SMALL_TXNS, ROWS, GROUP = 2000, 3, 50  # OLTP-like: 3 rows a transaction, a sync every 50
BIG = 50_000


def _change(seq: int, i: int) -> Change:
    raw = ('{"action":"I","schema":"public","table":"t","columns":[{"name":"id","type":"integer",'
           f'"value":{i}}},{{"name":"v","type":"text","value":"{"x" * 150}"}}],'
           '"pk":[{"name":"id","type":"integer"}]}')
    return Change(seq, Lsn(i), "I", "public", "t", raw)


def markers(bootstrap: str, txns: int, rows: int, group: int) -> float:
    log = KafkaLog(KafkaConfig(bootstrap_servers=bootstrap, topic=f"m{txns}-{rows}", single_broker=True),
                   slot="b", create=True)
    t0 = time.perf_counter()
    for t in range(1, txns + 1):
        log.begin(t, Lsn(t << 20))
        for r in range(rows):
            log.append(_change(r, (t << 20) - rows + r))
        log.commit(None)
        if t % group == 0 or t == txns:
            log.sync()
    took = time.perf_counter() - t0
    assert sum(1 for _ in log.transactions()) == txns
    log.close()
    return took


async def kafka_txns(bootstrap: str, txns: int, rows: int) -> tuple[float, float]:
    topic = f"k{txns}-{rows}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"pgcarry-{topic}",
                         enable_idempotence=True, acks="all", max_batch_size=1 << 20)
    await p.start()
    t0 = time.perf_counter()
    for t in range(1, txns + 1):
        await p.begin_transaction()
        for r in range(rows):
            c = _change(r, (t << 20) - rows + r)
            await p.send(topic, c.raw.encode(), key=b"public.t:%d" % r, partition=0,
                         headers=[("commit_lsn", str(Lsn(t << 20)).encode())])
        await p.commit_transaction()  # one round trip to the coordinator per source transaction
    took = time.perf_counter() - t0
    await p.stop()
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                         enable_auto_commit=False, auto_offset_reset="earliest")
    await c.start()
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    t1, n = time.perf_counter(), 0
    while n < txns * rows:
        n += sum(len(v) for v in (await c.getmany(tp, timeout_ms=1000)).values())
    read = time.perf_counter() - t1
    await c.stop()
    return took, read


def main() -> None:
    with LocalKafka() as k:
        for txns, rows in ((SMALL_TXNS, ROWS), (1, BIG)):
            m = markers(k.bootstrap, txns, rows, GROUP)
            kt, kr = asyncio.run(kafka_txns(k.bootstrap, txns, rows))
            print(f"{txns} transactions x {rows} rows: markers {m:.2f}s, "
                  f"kafka transactions {kt:.2f}s (read_committed read {kr:.2f}s)")


if __name__ == "__main__":
    main()
