"""A three-node KRaft cluster on this machine: a log topic with replication factor 1 is refused with
the reason; the topic pgcarry creates has RF 3 and min.insync.replicas 2; and the partition
leader killed with SIGKILL during capture under live traffic loses nothing the slot was confirmed
past: the log holds every committed transaction once, and replay equals production."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pgcarry.changelog.kafka import KafkaLog
from pgcarry.changelog.kafka_io import KafkaIO
from pgcarry.errors import LogError
from pgcarry.playground.localkafka import LocalKafka
from pgcarry.schemas.config import KafkaConfig
from tests.helpers import cli, execute, query, spawn, wait_running, write_config
from tests.kafka_fixture import _local_broker, new_topic, use_kafka
from tests.test_kafka_capture import logged

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalKafka]:
    started = time.monotonic()
    nodes = _local_broker(nodes=3)
    print(f"three-node cluster started in {time.monotonic() - started:.1f}s")
    yield nodes
    nodes.destroy()


def _leader(bootstrap: str, topic: str) -> int:
    async def go() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (meta,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return int(meta["partitions"][0]["leader"])

    return asyncio.run(go())


def test_replication_factor_1_is_refused_and_created_topics_survive_a_node(cluster):
    topic = new_topic()
    io = KafkaIO(cluster.bootstrap, {})
    try:
        io.create_topic(topic, 1, {"retention.ms": "-1", "retention.bytes": "-1"})
        with pytest.raises(LogError, match=rf"topic {topic} may lose captured changes \(replication factor 1 "
                                           r"with min.insync.replicas=1\).*replication factor >= 3"):
            KafkaLog(KafkaConfig(bootstrap_servers=cluster.bootstrap, topic=topic), slot="s", create=True)
        assert f"{topic}-state" not in io.topics()
        fresh = new_topic()
        KafkaLog(KafkaConfig(bootstrap_servers=cluster.bootstrap, topic=fresh), slot="s", create=True).close()
        for name in (fresh, f"{fresh}-state"):
            replicas, conf = io.describe(name)
            assert (replicas, conf["min.insync.replicas"]) == (3, "2")
    finally:
        io.close()


def test_leader_killed_during_capture_loses_nothing_confirmed(cluster, source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, txn integer, part integer)")
    topic = new_topic()
    use_kafka(write_config(workdir, source_dsn), cluster.bootstrap, topic, single=False)
    cli(workdir, "start", "--set-replica-identity", "--copy-to", target_dsn)
    daemon = spawn(workdir, "capture")
    committed: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            txn = 0
            while not stop.is_set():
                txn += 1
                with conn.transaction():
                    for part in range(3):
                        conn.execute("INSERT INTO t VALUES (%s, %s, %s)", (txn * 10 + part, txn, part))
                    if txn % 7 == 0:
                        conn.execute("UPDATE t SET part = part + 100 WHERE id = %s", ((txn - 3) * 10,))
                committed.append(txn)
                time.sleep(0.01)

    thread = threading.Thread(target=writer)
    try:
        wait_running(workdir, daemon)
        thread.start()
        time.sleep(3)
        leader = _leader(cluster.bootstrap, topic)
        confirmed_before = query(source_dsn, "SELECT confirmed_flush_lsn FROM pg_replication_slots")
        cluster.stop_node(leader - 1, kill=True)  # the partition leader, mid-stream
        time.sleep(8)
        stop.set()
        thread.join(30)
        assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
    finally:
        stop.set()
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, err
    assert query(source_dsn, "SELECT confirmed_flush_lsn > %s FROM pg_replication_slots",
                 (confirmed_before[0][0],)) == [(True,)]  # capture went on without the dead node
    cli(workdir, "capture", "--until", "current")
    got = logged(workdir)
    assert len(committed) > 100
    assert [cs[0].new["txn"] for _, _, cs in got] == committed  # every transaction once, in order
    cli(workdir, "replay", "--to", target_dsn)
    rows = "SELECT id, txn, part FROM t ORDER BY id"
    assert query(target_dsn, rows) == query(source_dsn, rows)
