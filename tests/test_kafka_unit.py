"""Kafka pieces that need no broker: settings, ${ENV} in security values, record keys."""

from __future__ import annotations

import pytest

from pgcarry.changelog.kafka import default_topic, record_key
from pgcarry.changelog.kafka_io import client_options
from pgcarry.schemas.change import Change
from pgcarry.schemas.config import parse
from pgcarry.schemas.lsn import Lsn


def test_security_values_expand_env_and_reach_the_client(monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "s3cret")
    cfg = parse({
        "source": {"dsn": "host=x"},
        "log": {"backend": "kafka", "kafka": {
            "bootstrap-servers": "k1:9092", "security": {
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


@pytest.mark.parametrize("raw,key", [
    ('{"action":"I","schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":7},'
     '{"name":"v","type":"text","value":"{\\"name\\":\\"id\\",\\"type\\":"}],'
     '"pk":[{"name":"id","type":"integer"}]}', "public.t:7"),
    ('{"action":"U","schema":"public","table":"t","columns":[{"name":"a b","type":"text","value":"new"},'
     '{"name":"n","type":"numeric","value":1.50}],"identity":[{"name":"a b","type":"text","value":"old"},'
     '{"name":"n","type":"numeric","value":1.50}],"pk":[{"name":"a b","type":"text"},'
     '{"name":"n","type":"numeric"}]}', "public.t:new,1.5"),
    ('{"action":"D","schema":"s","table":"t","identity":[{"name":"x","type":"text","value":"k,\\"q"}],'
     '"pk":[{"name":"x","type":"text"}]}', 's.t:k,"q'),
    ('{"action":"I","schema":"s","table":"t","columns":[{"name":"\\"odd\\"","type":"int","value":3}],'
     '"pk":[{"name":"\\"odd\\"","type":"int"}]}', "s.t:3"),
    ('{"action":"T","schema":"s","table":"t"}', "s.t:"),
    ('{"action":"I","schema":"s","table":"t","columns":[{"name":"v","type":"text","value":"x"}]}', "s.t:"),
])
def test_record_key(raw, key):
    import json

    doc = json.loads(raw)
    assert record_key(Change(0, Lsn(1), doc["action"], doc["schema"], doc["table"], raw)) == key.encode()
