"""Kafka fixtures: one session-wide broker (local KRaft node, or testcontainers where Docker answers)
and a private local broker for tests that stop it. Without a broker the Kafka tests skip, or FAIL
when PGCARRY_REQUIRE_KAFKA=1 (CI)."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgcarry.playground.localkafka import LocalKafka, kafka_libs
from pgcarry.schemas.config import KafkaConfig
from tests.clusters import docker_wanted

ROOT = Path(__file__).resolve().parent.parent
_topics = itertools.count(1)
_shared: list[LocalKafka | _ContainerKafka] = []  # one broker however many modules import the fixture


def _unavailable(why: str) -> None:
    if os.environ.get("PGCARRY_REQUIRE_KAFKA") == "1":
        pytest.fail(f"Kafka is required (PGCARRY_REQUIRE_KAFKA=1) but unavailable: {why}", pytrace=False)
    pytest.skip(f"no Kafka broker: {why}")


def _local_broker(nodes: int = 1) -> LocalKafka:
    if shutil.which("java") is None:
        _unavailable("no java on PATH (run: make system-deps)")
    if kafka_libs() is None:
        r = subprocess.run(["bash", str(ROOT / "scripts/fetch-kafka.sh")], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            _unavailable(f"scripts/fetch-kafka.sh failed: {r.stderr[-2000:]}")
    k = None
    try:
        k = LocalKafka(nodes=nodes)
        return k.start()
    except Exception as e:
        if k is not None:
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
def kafka_broker() -> LocalKafka | _ContainerKafka:
    """The shared broker (stopped when the test run exits); tests keep apart by topic."""
    if not _shared:
        broker = _ContainerKafka() if docker_wanted() else _local_broker()
        atexit.register(broker.destroy)
        _shared.append(broker)
    return _shared[0]


@pytest.fixture
def private_kafka() -> Iterator[LocalKafka]:
    """A broker of the test's own, which it may stop and start (always the local JVM)."""
    broker = _local_broker()
    yield broker
    broker.destroy()


def new_topic() -> str:
    return f"t{os.getpid()}-{next(_topics)}"


def kafka_config(bootstrap: str, **extra: object) -> KafkaConfig:
    """Settings for a fresh topic on `bootstrap` (one broker unless `extra` says otherwise)."""
    return KafkaConfig(bootstrap_servers=bootstrap, topic=new_topic(), **{"single_broker": True, **extra})


def use_kafka(config: Path, bootstrap: str, topic: str | None = None, *, single: bool = True) -> Path:
    """Point a pgcarry.toml written by tests.helpers.write_config at a fresh Kafka topic (on one
    broker, said in so many words, unless `single` is false)."""
    text = config.read_text()
    sqlite = '[log]\npath = "pgcarry-log.db"\n'
    assert sqlite in text, "write_config's [log] section changed"
    kafka = (f'[log]\nbackend = "kafka"\n\n[log.kafka]\nbootstrap-servers = "{bootstrap}"\n'
             f'topic = "{topic or new_topic()}"\n' + ("single-broker = true\n" if single else ""))
    config.write_text(text.replace(sqlite, kafka))
    return config
