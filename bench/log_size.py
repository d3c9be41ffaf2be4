"""Log size benchmark: the change log's bytes against the WAL it captures, and capture's time.

Runs pgbench (scale 5, 4 clients) and the shop workload (pgcarry/playground/shop.py) for a fixed
number of transactions, each on a throwaway source with its slots made before the workload: one
SQLite log drained after the workload (timed against pg_recvlogical draining the same WAL), one
SQLite log captured live while it ran (a group commit every 0.25 s makes small chunks), and a
Kafka log drained like the first when the broker's jars are there (`make kafka`). Prints WAL
bytes, log bytes, log/WAL, bytes per change and capture / pg_recvlogical for each.
Run: .venv/bin/python bench/log_size.py [--pgbench-txns N] [--shop-rounds N] [--no-kafka]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture import recvlogical  # noqa: E402  (bench/capture.py's pg_recvlogical drain)

from pgcarry.playground import shop  # noqa: E402
from pgcarry.playground.localkafka import LocalKafka, kafka_libs  # noqa: E402
from pgcarry.playground.localpg import LocalCluster  # noqa: E402
from pgcarry.pgtools import pg_tool  # noqa: E402


def _pgcarry(work: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "pgcarry", *args], cwd=work, capture_output=True,
                          text=True, check=True).stdout


def _log(work: Path, dsn: str, slot: str, kafka: LocalKafka | None = None) -> Path:
    """`pgcarry start` a log of its own (SQLite, or Kafka on `kafka`) on its own slot."""
    work.mkdir()
    log = (f'backend = "kafka"\n[log.kafka]\nbootstrap-servers = "{kafka.bootstrap}"\n' if kafka
           else 'path = "log.db"\n')
    (work / "pgcarry.toml").write_text(f'[source]\ndsn = "{dsn}"\nslot = "{slot}"\n[log]\n{log}')
    _pgcarry(work, "start", "--set-replica-identity")
    return work


def _pgbench(dsn: str, *args: str) -> None:
    p = conninfo_to_dict(dsn)
    subprocess.run([pg_tool("pgbench"), "-h", p["host"], "-p", str(p["port"]), "-U", p["user"],
                    *args, p["dbname"]], check=True, capture_output=True)


def pgbench_workload(txns: int) -> tuple[Callable[[str], None], Callable[[str], None]]:
    return (lambda dsn: _pgbench(dsn, "-i", "-s", "5", "-q"),
            lambda dsn: _pgbench(dsn, "-n", "-c", "4", "-j", "2", "-t", str(txns // 4)))


def shop_workload(rounds: int) -> tuple[Callable[[str], None], Callable[[str], None]]:
    def setup(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            shop.create(c)
            shop.seed(c, random.Random(1), profiles=200, products=50, coupons=10, orders=200)

    def run(dsn: str) -> None:
        rng = random.Random(2)
        with psycopg.connect(dsn, autocommit=True) as c:
            for _ in range(rounds):
                shop.traffic(c, rng, signups=2, orders=4)

    return setup, run


def _lsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]


def _wal_bytes(dsn: str, start: str, end: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        return int(c.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])  # type: ignore[index]


def _drain(work: Path, endpos: str) -> float:
    t0 = time.perf_counter()
    _pgcarry(work, "capture", "--until", endpos)
    return time.perf_counter() - t0


def _changes(status: dict[str, Any]) -> int:
    return sum(sum(c.values()) for c in status["tables"].values())


def _row(name: str, work: Path, wal: int, took: float | None, t_recv: float) -> None:
    status = json.loads(_pgcarry(work, "status", "--json", "--offline"))
    size, n = status["log"]["size_bytes"], _changes(status)
    ratio = f"{took / t_recv:6.2f}" if took is not None else "     -"
    print(f"  {name:15s} {size / 1e6:9.2f} MB  log/WAL {size / wal:5.2f}  {size / n:6.1f} B/change  "
          f"capture / pg_recvlogical {ratio}")


def measure(name: str, workload: tuple[Callable[[str], None], Callable[[str], None]], tmp: Path,
            kafka: LocalKafka | None) -> None:
    setup, run = workload
    with LocalCluster(f"size-{name}") as cluster:
        dsn = cluster.createdb(name)
        setup(dsn)
        drained = _log(tmp / f"{name}-sqlite", dsn, "carry_drain")
        live = _log(tmp / f"{name}-live", dsn, "carry_live")
        queue = _log(tmp / f"{name}-kafka", dsn, f"carry_{name}", kafka) if kafka else None
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SELECT pg_create_logical_replication_slot('bench_recv', 'wal2json')")
        start = _lsn(dsn)
        daemon = subprocess.Popen([sys.executable, "-m", "pgcarry", "capture"], cwd=live,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        run(dsn)
        took = time.perf_counter() - t0
        end = _lsn(dsn)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        _drain(live, end)  # what the live daemon had not read yet when it stopped
        wal = _wal_bytes(dsn, start, end)
        t_recv = recvlogical(dsn, _plugin_options(drained), end, tmp / f"{name}.json")
        t_sqlite = _drain(drained, end)
        t_kafka = _drain(queue, end) if queue else None
        changes = _changes(json.loads(_pgcarry(drained, "status", "--json", "--offline")))
        print(f"{name}: {changes} changes in {took:.1f}s of workload, WAL {wal / 1e6:.2f} MB "
              f"({wal / changes:.0f} B/change); pg_recvlogical drained it in {t_recv:.2f}s")
        _row("SQLite, drained", drained, wal, t_sqlite, t_recv)
        _row("SQLite, live", live, wal, None, t_recv)
        if queue:
            _row("Kafka, drained", queue, wal, t_kafka, t_recv)


def _plugin_options(work: Path) -> dict[str, str]:
    from pgcarry.changelog.sqlite import SQLiteLog

    log = SQLiteLog(work / "log.db", readonly=True)
    try:
        manifest = log.read_manifest()
        assert manifest is not None
        return dict(manifest.plugin_options)
    finally:
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pgbench-txns", type=int, default=20_000)
    ap.add_argument("--shop-rounds", type=int, default=500)
    ap.add_argument("--no-kafka", action="store_true", help="skip the Kafka log")
    args = ap.parse_args()
    kafka = None
    if not args.no_kafka:
        if kafka_libs() is None:
            print("kafka: skipped (run `make kafka` to fetch the broker jars)")
        else:
            kafka = LocalKafka().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            measure("pgbench", pgbench_workload(args.pgbench_txns), Path(tmp), kafka)
            measure("shop", shop_workload(args.shop_rounds), Path(tmp), kafka)
    finally:
        if kafka is not None:
            kafka.destroy()
    print("targets: log/WAL <= 1.0 (goal <= 0.5), capture / pg_recvlogical <= 1.5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
