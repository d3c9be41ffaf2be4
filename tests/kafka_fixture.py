"""Kafka fixtures: one session-wide broker (local KRaft node, or testcontainers where Docker answers)
and a private local broker for tests that stop it. Without a broker the Kafka tests skip, or FAIL
when PGCARRY_REQUIRE_KAFKA=1 (CI)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgcarry.localkafka import LocalKafka, kafka_libs
from pgcarry.schemas.config import KafkaConfig
from tests.clusters import docker_wanted

ROOT = Path(__file__).resolve().parent.parent
_topics = itertools.count(1)


def _unavailable(why: str) -> None:
    if os.environ.get("PGCARRY_REQUIRE_KAFKA") == "1":
        pytest.fail(f"Kafka is required (PGCARRY_REQUIRE_KAFKA=1) but unavailable: {why}", pytrace=False)
    pytest.skip(f"no Kafka broker: {why}")


def _local_broker() -> LocalKafka:
    if shutil.which("java") is None:
        _unavailable("no java on PATH (run: make system-deps)")
    if kafka_libs() is None:
        r = subprocess.run(["bash", str(ROOT / "scripts/fetch-kafka.sh")], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            _unavailable(f"scripts/fetch-kafka.sh failed: {r.stderr[-2000:]}")
    k = LocalKafka()
    try:
        return k.start()
    except Exception as e:
        k.destroy()
        _unavailable(str(e))
        raise


class _ContainerKafka:
    """testcontainers' Kafka module: only where a Docker engine answers."""

    def __init__(self) -> None:
        from testcontainers.kafka import KafkaContainer

        self._c = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
        self._c.start()
        self.bootstrap = self._c.get_bootstrap_server()

    def log_tail(self) -> str:
        out, err = self._c.get_logs()
        return (out + err).decode(errors="replace")[-4000:]

    def destroy(self) -> None:
        self._c.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalKafka | _ContainerKafka]:
    """The shared broker; tests keep apart by topic."""
    broker = _ContainerKafka() if docker_wanted() else _local_broker()
    yield broker
    broker.destroy()


@pytest.fixture
def private_kafka() -> Iterator[LocalKafka]:
    """A broker of the test's own, which it may stop and start (always the local JVM)."""
    broker = _local_broker()
    yield broker
    broker.destroy()


def kafka_config(bootstrap: str, **extra: object) -> KafkaConfig:
    """Settings for a fresh topic on `bootstrap`."""
    return KafkaConfig(bootstrap_servers=bootstrap, topic=f"t{os.getpid()}-{next(_topics)}", **extra)
