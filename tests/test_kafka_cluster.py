"""A three-node KRaft cluster on this machine: a log topic with replication factor 1 is refused with
the reason; the topic pgcarry creates has RF 3 and min.insync.replicas 2; and the partition
leader killed with SIGKILL during capture under live traffic loses nothing the slot was confirmed
past: the log holds every committed transaction once, and replay equals production."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pgcarry.changelog.kafka import KafkaLog
from pgcarry.changelog.kafka_io import KafkaIO
from pgcarry.errors import LogError
from pgcarry.playground.localkafka import LocalKafka
from pgcarry.schemas.config import KafkaConfig
from tests.helpers import cli, execute, query, write_config
from tests.kafka_fixture import _local_broker, new_topic, use_kafka
from tests.test_kafka_capture import capture_under_traffic, logged

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
    confirmed_before: list = []

    def kill_leader() -> None:
        confirmed_before.extend(query(source_dsn, "SELECT confirmed_flush_lsn FROM pg_replication_slots"))
        cluster.stop_node(_leader(cluster.bootstrap, topic) - 1, kill=True)  # mid-stream
        time.sleep(8)

    committed, _ = capture_under_traffic(workdir, source_dsn, kill_leader)
    assert query(source_dsn, "SELECT confirmed_flush_lsn > %s FROM pg_replication_slots",
                 (confirmed_before[0][0],)) == [(True,)]  # capture went on without the dead node
    cli(workdir, "capture", "--until", "current")
    got = logged(workdir)
    assert len(committed) > 100
    assert [cs[0].new["txn"] for _, _, cs in got] == committed  # every transaction once, in order
    cli(workdir, "replay", "--to", target_dsn)
    rows = "SELECT id, txn, part FROM t ORDER BY id"
    assert query(target_dsn, rows) == query(source_dsn, rows)
