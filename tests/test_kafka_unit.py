"""Kafka pieces that need no broker: settings, ${ENV} in security values, replication rules,
the index's completeness rule and its snapshot."""

from __future__ import annotations

import pytest

from pgcarry.changelog.kafka import default_topic
from pgcarry.changelog.kafka_io import client_options
from pgcarry.schemas.config import parse


def test_security_values_expand_env_and_reach_the_client(monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "s3cret")
    cfg = parse({
        "source": {"dsn": "host=x"},
        "log": {"backend": "kafka", "kafka": {
            "bootstrap-servers": "k1:9092", "single-broker": True, "security": {
                "security-protocol": "SASL_PLAINTEXT", "sasl-mechanism": "PLAIN",
                "sasl-plain-username": "carry", "sasl-plain-password": "${KAFKA_PASSWORD}"}}},
    })
    kafka = cfg.log.kafka
    assert kafka is not None and kafka.topic is None and kafka.create_topic
    assert default_topic(cfg.source.slot) == "pgcarry-pgcarry"
    assert client_options(kafka.bootstrap_servers, kafka.security) == {
        "bootstrap_servers": "k1:9092", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN", "sasl_plain_username": "carry", "sasl_plain_password": "s3cret",
    }


@pytest.mark.parametrize("rf,isr,ok", [
    (1, 1, False), (2, 1, False), (2, 2, True), (3, 1, False), (3, 2, True), (3, 3, True),
    (5, 2, True), (2, 3, False),
])
def test_which_replication_survives_one_broker(rf, isr, ok):
    from pgcarry.schemas.config import survives_one_broker_loss

    assert survives_one_broker_loss(rf, isr) is ok


def test_config_refuses_replication_that_loses_changes_unless_single_broker():
    from pgcarry.errors import ConfigError

    def kafka(**kw):  # type: ignore[no-untyped-def]
        return parse({"source": {"dsn": "host=x"},
                      "log": {"backend": "kafka", "kafka": {"bootstrap-servers": "k:9092", **kw}}}).log.kafka

    assert (kafka().replication_factor, kafka().min_insync_replicas) == (3, 2)
    assert (kafka(**{"single-broker": True}).replication_factor,
            kafka(**{"single-broker": True}).min_insync_replicas) == (1, 1)
    with pytest.raises(ConfigError, match="replication-factor 1 with min-insync-replicas 1 loses acknowledged"):
        kafka(**{"replication-factor": 1})
    with pytest.raises(ConfigError, match=r"min-insync-replicas \(3\) exceeds replication-factor \(2\)"):
        kafka(**{"replication-factor": 2, "min-insync-replicas": 3})
    assert kafka(**{"replication-factor": 2, "min-insync-replicas": 2}).compression == "zstd"


class _R:  # a consumer record as the index sees it
    def __init__(self, offset, headers, value=b""):  # type: ignore[no-untyped-def]
        self.offset, self.value, self.serialized_key_size = offset, value, -1
        self.headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in headers.items()]
        self.serialized_value_size = len(value)


def _copy(at, lsn, chunks, n, ctime="2026-01-01"):  # type: ignore[no-untyped-def]
    import json

    from pgcarry.changelog.kafka_index import BEGIN, CHUNK, COMMIT

    h = {"commit_lsn": lsn, "xid": 7}
    recs = [_R(at, {"type": BEGIN, **h})]
    recs += [_R(at + 1 + j, {"type": CHUNK, **h, "i": i, "n": k}) for j, (i, k) in enumerate(chunks)]
    marker = json.dumps({"n": n, "commit_time": ctime, "counts": {"s.t": {"insert": n}}}).encode()
    return recs + [_R(at + 1 + len(chunks), {"type": COMMIT, **h, "n": n}, marker)]


def test_index_counts_only_copies_whose_chunks_are_contiguous_and_complete():
    from pgcarry.changelog.kafka_index import Index

    ix = Index()
    ix.add(_copy(0, "0/10", [(0, 1000), (1000, 500)], 1500))  # complete
    ix.add(_copy(10, "0/20", [(0, 1000), (2000, 500)], 3000))  # the chunk at 1000 is missing
    ix.add(_copy(20, "0/30", [(0, 2), (0, 2), (2, 1)], 3))  # a duplicated chunk is read once
    ix.add(_copy(30, "0/40", [(0, 2)], 3))  # the last chunk never arrived
    assert sorted(ix.complete) == [0x10, 0x30]
    assert ix.holes == {0x20: (1500, 3000), 0x40: (2, 3)}
    ix.add(_copy(40, "0/20", [(0, 1000), (1000, 1000), (2000, 1000)], 3000))  # the re-sent copy
    assert sorted(ix.complete) == [0x10, 0x20, 0x30] and ix.holes == {0x40: (2, 3)}
    assert (ix.transactions, ix.counts) == (3, {"s.t": {"insert": 4503}})


def test_index_snapshot_goes_on_where_it_stopped():
    from pgcarry.changelog.kafka_index import Index, OpenCopy

    full, part = Index(), Index()
    records = (_copy(0, "0/10", [(0, 5)], 5) + _copy(3, "0/20", [(0, 1)], 2)
               + _copy(6, "0/30", [(0, 4), (4, 4)], 8) + _copy(10, "0/20", [(0, 2)], 2))
    full.add(records)
    part.add(records[:8])  # stops inside the copy of 0/30, after its first chunk
    seeded = Index.from_snapshot(part.snapshot(8, {}))
    seeded.add(records[8:])
    for ix in (full, seeded):
        assert (ix.transactions, ix.counts, ix.last, ix.holes) == (3, {"s.t": {"insert": 15}}, 0x30, {})
    assert seeded.has(0x10) and seeded.has(0x20) and not seeded.has(0x25)
    writer = Index.from_snapshot(part.snapshot(8, {0x30: OpenCopy(-1, 0, 4, 4)}))
    writer.own_commit(0x40, None, {"s.t": {"insert": 1}})  # 0/20 (holed) and 0/30 stay unknown
    assert writer.has(0x40) and not writer.has(0x20) and not writer.has(0x30) and writer.has(0x10)
