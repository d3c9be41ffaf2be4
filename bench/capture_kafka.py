"""The Kafka rows of bench/capture.py: a second slot created at the same time drains the same
rows into a Kafka log on a local broker (`make kafka` fetches its jars)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pgcarry.playground.localkafka import LocalKafka, kafka_libs


@dataclass
class KafkaBench:
    broker: LocalKafka
    work: Path


def setup(dsn: str, tmp: Path) -> KafkaBench | None:
    """Start a broker and `pgcarry start` a Kafka-logged slot; None when the jars are missing."""
    if kafka_libs() is None:
        print("kafka: skipped (run `make kafka` to fetch the broker jars)")
        return None
    t0 = time.perf_counter()
    broker = LocalKafka().start()
    print(f"kafka: broker started in {time.perf_counter() - t0:.1f}s")
    work = tmp / "kafka"
    work.mkdir()
    (work / "pgcarry.toml").write_text(
        f'[source]\ndsn = "{dsn}"\nslot = "pgcarry_kafka"\n[log]\nbackend = "kafka"\n'
        f'[log.kafka]\nbootstrap-servers = "{broker.bootstrap}"\nsingle-broker = true\n')
    _pgcarry(work, "start")
    return KafkaBench(broker, work)


def drain(bench: KafkaBench, endpos: str, rows: int, t_recv: float, t_sqlite: float) -> None:
    try:
        t0 = time.perf_counter()
        out = json.loads(_pgcarry(bench.work, "capture", "--until", endpos, "--json"))
        took = time.perf_counter() - t0
        assert out["changes"] == rows, out
        print(f"pgcarry capture (Kafka log): {took:.2f}s ({out['changes']} changes)")
        print(f"ratio Kafka / pg_recvlogical: {took / t_recv:.2f}; Kafka / SQLite log: {took / t_sqlite:.2f}")
    finally:
        bench.broker.destroy()


def _pgcarry(work: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "pgcarry", *args], cwd=work,
                          capture_output=True, text=True, check=True).stdout
