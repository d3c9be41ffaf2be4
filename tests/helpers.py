"""Helpers for the tests: write a config, run the real `pgcarry` CLI, read a log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from pgcarry.changelog.sqlite import SQLiteLog


# Debian 12's wal2json (2.5) cannot send NaN/±Infinity: tests of other things with nullable
# number columns accept that (tests/test_nan_infinity.py tests it)
NAN_AS_NULL = "accept-nan-as-null = true"


def write_config(workdir: Path, source_dsn: str, *, slot: str = "pgcarry", extra: str = "",
                 tables: list[str] | None = None, capture: str = "") -> Path:
    tables = tables or ["public.*"]
    text = (
        f"[source]\ndsn = {json.dumps(source_dsn)}\nslot = {json.dumps(slot)}\n\n"
        f"[capture]\ntables = {json.dumps(tables)}\n{capture}\n\n"
        f"[log]\npath = \"pgcarry-log.db\"\n\n{extra}\n"
    )
    path = workdir / "pgcarry.toml"
    path.write_text(text)
    return path


def cli(workdir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `pgcarry ARGS` in `workdir` (its pgcarry.toml) as a separate process."""
    proc = subprocess.run(
        [sys.executable, "-m", "pgcarry", *args], cwd=workdir, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pgcarry {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_json(workdir: Path, *args: str) -> Any:
    return json.loads(cli(workdir, *args, "--json").stdout)


def spawn(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgcarry", *args], cwd=workdir, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def execute(dsn: str, *statements: str, params: tuple[Any, ...] | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt, params)  # type: ignore[arg-type]


def query(dsn: str, stmt: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(stmt, params).fetchall()  # type: ignore[arg-type]


def logged_changes(workdir: Path) -> list[tuple[int, Any]]:
    """(xid, Change) for every change of every complete transaction, in log order."""
    log = SQLiteLog(workdir / "pgcarry-log.db")
    try:
        return [(t.xid, c) for t in log.transactions() for c in t.changes]
    finally:
        log.close()


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_peak_rss_mb(proc: subprocess.Popen[str], interval: float = 0.1) -> float:
    """Wait for `proc` and return its peak RSS (VmHWM) in MB, polled while it runs: ru_maxrss of
    a child would include the parent's own peak (vfork + exec)."""
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm_mb(proc.pid))
        time.sleep(interval)
    return peak


def wait_running(workdir: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Wait until `status` sees the capture daemon `proc` holding the log's lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        if cli_json(workdir, "status", "--offline")["daemon"]["running"]:
            return
        time.sleep(0.1)
    raise AssertionError("daemon did not start")


def kill_capture_repeatedly(workdir: Path, kills: int, rng: Any, low: float, high: float) -> None:
    """Start `pgcarry capture` and SIGKILL it after a random `low`..`high` seconds, `kills` times."""
    for _ in range(kills):
        proc = spawn(workdir, "capture")
        wait_running(workdir, proc)
        time.sleep(rng.uniform(low, high))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # type: ignore[union-attr]
