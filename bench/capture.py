"""Capture benchmark: `pgcarry capture --until current` vs pg_recvlogical draining the same WAL.

Inserts ROWS rows on a throwaway source in batches, with two slots created before (pgcarry's and
one for pg_recvlogical, same wal2json options), then times both drains and prints the ratio.
Run: .venv/bin/python bench/capture.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgcarry.capture.replication import SESSION_OPTIONS  # noqa: E402
from pgcarry.playground.localpg import LocalCluster  # noqa: E402
from pgcarry.pgtools import pg_tool  # noqa: E402

import capture_kafka  # noqa: E402  (the Kafka log's rows, kept apart)


def pgcarry(workdir: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pgcarry", *args], cwd=workdir,
                          capture_output=True, text=True, check=True)
    return proc.stdout


def load(dsn: str, rows: int, batch: int = 1000) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, rows, batch):
            conn.execute(
                "INSERT INTO orders (customer, amount, note) SELECT 'customer ' || g, g * 1.25, "
                "repeat('n', 60) FROM generate_series(%s::int, %s::int) g",
                (start + 1, min(start + batch, rows)),
            )


def recvlogical(dsn: str, options: dict[str, str], endpos: str, out: Path) -> float:
    cmd = [pg_tool("pg_recvlogical"), "-d", dsn, "--slot", "bench_recv", "--start",
           "--endpos", endpos, "--fsync-interval=1", "-f", str(out), "--no-loop"]
    for k, v in options.items():
        cmd += ["-o", f"{k}={v}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={"PGOPTIONS": SESSION_OPTIONS, "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--no-kafka", action="store_true", help="skip the Kafka log rows")
    args = ap.parse_args()
    with LocalCluster("bench") as cluster, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dsn = cluster.createdb("bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, customer text, "
                         "amount numeric(12,2), note text, created_at timestamptz DEFAULT now())")
            conn.execute("ALTER TABLE orders REPLICA IDENTITY FULL")
        (work / "pgcarry.toml").write_text(f'[source]\ndsn = "{dsn}"\n[capture]\naccept-nan-as-null = true\n'
                                           '[log]\npath = "log.db"\n')
        pgcarry(work, "start")
        kafka = None if args.no_kafka else capture_kafka.setup(dsn, work)
        manifest = json.loads(pgcarry(work, "status", "--json", "--offline"))
        assert manifest["manifest"]
        options = json.loads(subprocess.run(
            [sys.executable, "-c", "import json,sys; from pgcarry.changelog.sqlite import SQLiteLog; "
             "print(json.dumps(SQLiteLog(sys.argv[1]).read_manifest().plugin_options))", str(work / "log.db")],
            capture_output=True, text=True, check=True).stdout)
        subprocess.run([pg_tool("pg_recvlogical"), "-d", dsn, "--slot", "bench_recv",
                        "--create-slot", "-P", "wal2json"], check=True)
        t0 = time.perf_counter()
        load(dsn, args.rows)
        print(f"inserted {args.rows} rows in {time.perf_counter() - t0:.2f}s")
        with psycopg.connect(dsn) as conn:
            endpos = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]

        t_recv = recvlogical(dsn, options, endpos, work / "recv.json")
        t0 = time.perf_counter()
        out = json.loads(pgcarry(work, "capture", "--until", endpos, "--json"))
        t_carry = time.perf_counter() - t0
        assert out["changes"] == args.rows, out
        lines = sum(1 for _ in open(work / "recv.json"))
        print(f"pg_recvlogical: {t_recv:.2f}s ({lines} lines)")
        print(f"pgcarry capture (SQLite log): {t_carry:.2f}s ({out['changes']} changes, "
              f"{out['transactions']} transactions)")
        print(f"ratio pgcarry / pg_recvlogical: {t_carry / t_recv:.2f} (target <= 1.5)")
        db = sum(p.stat().st_size for p in work.glob("log.db*"))
        print(f"  SQLite log file: {db} bytes, {db / args.rows:.0f} bytes per change")
        if kafka is not None:
            capture_kafka.drain(kafka, endpos, args.rows, t_recv, t_carry)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
