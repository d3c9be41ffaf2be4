"""The Kafka rows of bench/capture.py: two more slots created at the same time drain the same rows
into Kafka logs on a local broker (`make kafka` fetches its jars), one with the producer's zstd
compression and one without. Printed per log: the drain's time against pg_recvlogical and the
SQLite log, the topic's bytes per change on the broker's disk (the partition's log segment files),
and how long `pgcarry status` takes at that size against a full read of the changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pgcarry.changelog.kafka import KafkaLog
from pgcarry.playground.localkafka import LocalKafka, kafka_libs
from pgcarry.schemas.config import KafkaConfig

COMPRESSIONS = ("zstd", "none")


@dataclass
class KafkaBench:
    broker: LocalKafka
    works: dict[str, Path]


def setup(dsn: str, tmp: Path) -> KafkaBench | None:
    """Start a broker and `pgcarry start` one Kafka-logged slot per compression; None when the
    jars are missing."""
    if kafka_libs() is None:
        print("kafka: skipped (run `make kafka` to fetch the broker jars)")
        return None
    t0 = time.perf_counter()
    broker = LocalKafka().start()
    print(f"kafka: broker started in {time.perf_counter() - t0:.1f}s")
    works = {}
    for codec in COMPRESSIONS:
        work = tmp / f"kafka-{codec}"
        work.mkdir()
        (work / "pgcarry.toml").write_text(
            f'[source]\ndsn = "{dsn}"\nslot = "pgcarry_kafka_{codec}"\n'
            f'[capture]\naccept-nan-as-null = true\n[log]\nbackend = "kafka"\n'
            f'[log.kafka]\nbootstrap-servers = "{broker.bootstrap}"\nsingle-broker = true\n'
            f'compression = "{codec}"\n')
        _pgcarry(work, "start")
        works[codec] = work
    return KafkaBench(broker, works)


def topic_bytes(broker: LocalKafka, slot: str) -> int:
    """The log topic's bytes on the broker's disk: its partition's segment files."""
    return sum(p.stat().st_size for p in (broker.data_dir() / f"pgcarry-{slot}-0").glob("*.log"))


def drain(bench: KafkaBench, endpos: str, rows: int, t_recv: float, t_sqlite: float) -> None:
    try:
        for codec, work in bench.works.items():
            t0, cpu0 = time.perf_counter(), _cpu_seconds(bench.broker)
            out = json.loads(_pgcarry(work, "capture", "--until", endpos, "--json"))
            took, broker_cpu = time.perf_counter() - t0, _cpu_seconds(bench.broker) - cpu0
            assert out["changes"] == rows, out
            size = topic_bytes(bench.broker, f"pgcarry_kafka_{codec}")
            t0 = time.perf_counter()
            status = json.loads(_pgcarry(work, "status", "--offline", "--json"))
            t_status = time.perf_counter() - t0
            assert sum(c["insert"] for c in status["tables"].values()) == rows, status
            t_summary, t_full = _reads(bench.broker, f"pgcarry_kafka_{codec}", rows)
            print(f"pgcarry capture (Kafka log, {codec}): {took:.2f}s; ratio to pg_recvlogical "
                  f"{took / t_recv:.2f} (target <= 1.5), to the SQLite log {took / t_sqlite:.2f}")
            print(f"  topic on the broker's disk: {size} bytes, {size / rows:.0f} bytes per change; the "
                  f"broker's JVM used {broker_cpu:.2f}s of CPU during the drain (the same 2 cores)")
            print(f"  `pgcarry status --offline` {t_status:.2f}s as a new process; in process: open + "
                  f"summary() {t_summary:.2f}s (counts snapshot), a full read of the changes {t_full:.2f}s")
    finally:
        bench.broker.destroy()


def _cpu_seconds(broker: LocalKafka) -> float:
    """User + system CPU the broker's process has used so far (Linux /proc)."""
    proc = broker._procs[0]
    assert proc is not None
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _reads(broker: LocalKafka, slot: str, rows: int) -> tuple[float, float]:
    """Seconds to open the log and get status's counts, and to read every change (what replay does)."""
    cfg = KafkaConfig(bootstrap_servers=broker.bootstrap, single_broker=True)
    t0 = time.perf_counter()
    with KafkaLog(cfg, slot=slot, readonly=True) as log:
        assert sum(c["insert"] for c in log.summary().tables.values()) == rows
    t_summary = time.perf_counter() - t0
    t0 = time.perf_counter()
    with KafkaLog(cfg, slot=slot, readonly=True) as log:
        assert sum(1 for _ in log.raw_changes()) == rows
    return t_summary, time.perf_counter() - t0


def _pgcarry(work: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "pgcarry", *args], cwd=work,
                          capture_output=True, text=True, check=True).stdout
