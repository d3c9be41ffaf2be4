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
