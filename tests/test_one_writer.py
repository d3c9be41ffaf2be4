"""One writer per change log. Two capture daemons with their own lock folders ("two hosts"): the
second is refused while the first holds the Kafka lease; a frozen holder whose lease ran out is
taken over and stops (fenced) without confirming; cutover refuses before the fence while another
writer holds the log; and the cutover's drain gives up on a busy slot and lifts the fence."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgcarry.pgtools import pg_tool
from tests.helpers import cli, cli_json, execute, query, write_config
from tests.kafka_fixture import kafka_broker, use_kafka  # noqa: F401
from tests.test_cutover import prepared  # noqa: F401
from tests.test_kafka_capture import logged

LEASE = {"PGCARRY_KAFKA_LEASE": "3"}


def _on_host(workdir: Path, host: Path, *args: str) -> subprocess.Popen[str]:
    host.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "pgcarry", *args], cwd=workdir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(host), **LEASE})


def _until(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _status(workdir: Path) -> dict:  # type: ignore[type-arg]
    return cli_json(workdir, "status", "--offline")


@pytest.mark.kafka
def test_second_host_is_refused_and_a_frozen_writer_is_fenced(kafka_broker, source_dsn, workdir, tmp_path):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    use_kafka(write_config(workdir, source_dsn), kafka_broker.bootstrap)
    topic = [line.split('"')[1] for line in (workdir / "pgcarry.toml").read_text().splitlines()
             if line.startswith("topic =")][0]
    cli(workdir, "start", "--set-replica-identity")
    a = _on_host(workdir, tmp_path / "host-a", "capture")
    _until(lambda: _status(workdir)["daemon"]["running"])
    assert _status(workdir)["daemon"] == {"running": True, "pid": a.pid, "host": socket.gethostname()}
    execute(source_dsn, "INSERT INTO t SELECT generate_series(1, 100)")

    second = _on_host(workdir, tmp_path / "host-b", "capture")  # its local lock is free
    _, err = second.communicate(timeout=60)
    assert second.returncode == 3
    assert f"another capture daemon writes topic {topic} (host {socket.gethostname()}, pid {a.pid}," in err

    _until(lambda: _status(workdir)["tables"]["public.t"]["insert"] == 100)
    a.send_signal(signal.SIGSTOP)  # frozen: its lease runs out, its walsender stays connected
    time.sleep(3.5)
    b = _on_host(workdir, tmp_path / "host-b", "capture")
    _until(lambda: _status(workdir)["daemon"].get("pid") == b.pid)  # b took the lease over
    execute(source_dsn, "INSERT INTO t SELECT generate_series(101, 200)")
    a.send_signal(signal.SIGCONT)
    _, err = a.communicate(timeout=60)
    assert a.returncode == 3, err
    assert f"another writer took over topic {topic} (host {socket.gethostname()}, pid {b.pid}," in err
    assert "stops without confirming" in err
    _until(lambda: _status(workdir)["tables"]["public.t"]["insert"] == 200)  # b goes on
    b.send_signal(signal.SIGTERM)
    assert b.wait(60) == 0
    ids = [c.new["id"] for _, _, cs in logged(workdir) for c in cs]
    assert ids == list(range(1, 201))  # every row once, in commit order


@pytest.mark.kafka
def test_cutover_refuses_before_the_fence_while_another_host_writes(kafka_broker, source_dsn, target_dsn,
                                                                     workdir, tmp_path):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    use_kafka(write_config(workdir, source_dsn), kafka_broker.bootstrap)
    cli(workdir, "start", "--set-replica-identity", "--copy-to", target_dsn)
    a = _on_host(workdir, tmp_path / "host-a", "capture")
    try:
        _until(lambda: _status(workdir)["daemon"]["running"])
        cut = _on_host(workdir, tmp_path / "host-b", "cutover", "--from", target_dsn, "--yes")
        _, err = cut.communicate(timeout=120)
        assert cut.returncode == 3
        assert (f"another capture daemon writes the change log (host {socket.gethostname()}, pid {a.pid}); "
                "the cutover would wait for it with production fenced") in err
        assert query(source_dsn, "SELECT count(*) FROM pg_db_role_setting") == [(0,)]  # not fenced
        execute(source_dsn, "INSERT INTO t VALUES (1)")  # production still writes
        assert a.poll() is None  # and its daemon runs on
        _until(lambda: _status(workdir)["tables"]["public.t"]["insert"] == 1)
    finally:
        a.send_signal(signal.SIGTERM)
        a.wait(60)


def test_drain_gives_up_on_a_busy_slot_and_lifts_the_fence(source_dsn, target_dsn, workdir, prepared):
    """Something else streams the slot: the drain waits a bounded time, then the cutover unfences
    and says why, instead of retrying "slot is active" forever with production fenced."""
    holder = subprocess.Popen([pg_tool("pg_recvlogical"), "-d", source_dsn, "--slot", "cutover_t", "--start",
                               "-f", os.devnull, "-o", "format-version=2"], stderr=subprocess.PIPE)
    try:
        _until(lambda: query(source_dsn, "SELECT active FROM pg_replication_slots") == [(True,)])
        started = time.monotonic()
        r = cli(workdir, "cutover", "--from", target_dsn, "--yes", check=False,
                env={"PGCARRY_DRAIN_BUSY_WAIT": "3"})
        assert r.returncode == 2, r.stderr
        assert "replication slot 'cutover_t' stayed in use by another process for 3s" in r.stderr
        assert time.monotonic() - started < 60
        assert "production unfenced" in r.stderr
        execute(prepared, "UPDATE products SET title = title WHERE id = 1")  # the app writes again
    finally:
        holder.terminate()
        holder.wait(30)
