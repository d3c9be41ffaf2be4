"""pgbench (TPC-B-like, 4 clients, a fixed number of transactions) on production while the capture
daemon is SIGKILLed at random moments (>= 10 times): replaying the log onto the T0 copy gives
exactly production's final state (balances through `delta`, pgbench_history as plain inserts)."""

from __future__ import annotations

import random
import subprocess

from psycopg.conninfo import conninfo_to_dict

from pgcarry.pgtools import pg_tool
from tests.helpers import cli, cli_json, kill_capture_repeatedly, query, write_config

DELTA = "".join(f'\n[replay.tables."public.pgbench_{t}".columns]\n{c} = "delta"\n'
                for t, c in (("accounts", "abalance"), ("tellers", "tbalance"), ("branches", "bbalance")))
TABLES = {"pgbench_accounts": "aid", "pgbench_tellers": "tid", "pgbench_branches": "bid",
          "pgbench_history": "tid, bid, aid, delta, mtime"}


def _pgbench(dsn: str, *args: str) -> list[str]:
    p = conninfo_to_dict(dsn)
    return [pg_tool("pgbench"), "-h", p["host"], "-p", str(p["port"]), "-U", p["user"], *args, p["dbname"]]


def test_pgbench_with_ten_kills_replays_to_production_state(source_dsn, target_dsn, workdir):
    subprocess.run(_pgbench(source_dsn, "-i", "-s", "1", "-q"), check=True, capture_output=True)
    write_config(workdir, source_dsn, extra=DELTA)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    bench = subprocess.Popen(_pgbench(source_dsn, "-n", "-c", "4", "-j", "2", "-t", "800", "-R", "300"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_capture_repeatedly(workdir, 10, random.Random(6), 0.1, 1.0)
    out, err = bench.communicate(timeout=300)
    assert bench.returncode == 0, err
    assert "number of transactions actually processed: 3200/3200" in out
    cli(workdir, "capture", "--until", "current")
    assert cli_json(workdir, "status", "--offline")["tables"]["public.pgbench_history"]["insert"] == 3200
    cli(workdir, "replay", "--to", target_dsn)
    for table, order in TABLES.items():
        stmt = f"SELECT * FROM {table} ORDER BY {order}"
        assert query(target_dsn, stmt) == query(source_dsn, stmt), table
    assert query(target_dsn, "SELECT count(*), sum(delta) FROM pgbench_history") == \
        query(source_dsn, "SELECT count(*), sum(delta) FROM pgbench_history")
    checks = cli_json(workdir, "verify", "--to", target_dsn)
    assert checks["ok"], [c for c in checks["checks"] if not c["ok"]]
    assert {"name": "counts", "table": "public.pgbench_history", "ok": True,
            "detail": "log {'insert': 3200}"} in checks["checks"]
