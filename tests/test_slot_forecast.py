"""Slot safety under max_slot_wal_keep_size: `start` warns, the daemon samples the WAL rate into
the log, the metrics and `status` show safe_wal_size and the time left; status exits 6 once that is
below the threshold, and 3 once the slot is lost."""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.request

import pytest

from pgcarry.capture.forecast import MAX_SAMPLES, SAMPLE_INTERVAL, WINDOW, WalSamples, estimate
from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.playground.localpg import LocalCluster, free_port
from tests.helpers import cli, cli_json, execute, query, spawn, wait_running, write_config

MB = 1024 * 1024
THRESHOLD_S = 10.0  # well between the estimate with 15+ MB left and the one with < 1 MB left


# -- the ring and the estimate (pure) ---------------------------------------------------------
def test_rate_is_taken_from_the_sample_nearest_an_hour_ago():
    w = WalSamples()
    for i in range(200):  # 200 minutes of 1 MB per minute
        w.add(i * SAMPLE_INTERVAL, i * MB)
    assert len(w.samples) <= MAX_SAMPLES
    now = 199 * SAMPLE_INTERVAL + 30
    rate, span = w.rate(now, 199 * MB + MB // 2)  # type: ignore[misc]
    t0, lsn0 = next(s for s in reversed(w.samples) if s[0] <= now - WINDOW)
    assert span == now - t0 >= WINDOW and rate == (199 * MB + MB // 2 - lsn0) / span
    assert round(rate) == round(MB / SAMPLE_INTERVAL)


def test_ring_state_roundtrip_and_reset_on_a_new_server():
    w = WalSamples()
    w.add(1000.0, 5 * MB)
    w.add(1060.0, 6 * MB)
    assert WalSamples.from_state(json.loads(json.dumps(w.to_state()))).samples == w.samples
    w.add(1120.0, 1 * MB)  # WAL went backwards: another cluster answers at that address
    assert w.samples == [(1120.0, 1 * MB)]
    assert w.rate(1120.5, 2 * MB) is None  # under a second apart: no rate
    assert w.rate(1122.0, 2 * MB) == (MB / 2.0, 2.0)


def test_estimate():
    assert estimate(None, 5.0) is None  # no max_slot_wal_keep_size (or lost)
    assert estimate(100, None) is None and estimate(100, 0.0) is None  # no WAL written
    assert estimate(0, 5.0) == 0.0 and estimate(-10, None) == 0.0  # the next checkpoint
    assert estimate(100, 4.0) == 25.0


# -- on a real cluster -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def capped_cluster():
    c = LocalCluster("slotcap", {"max_slot_wal_keep_size": "16MB", "checkpoint_timeout": "1h"}).start()
    yield c
    c.destroy()


def _safe(dsn: str) -> int:
    return query(dsn, "SELECT safe_wal_size FROM pg_replication_slots")[0][0]


def _fill(dsn: str, chunk: int, until_below: int) -> None:
    """Write WAL (logical messages, no table) in `chunk`s until safe_wal_size < `until_below`."""
    while _safe(dsn) >= until_below:
        execute(dsn, "SELECT pg_logical_emit_message(false, 'pgcarry-test', repeat('x', %s))",
                params=(chunk,))


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines())
            if k.startswith(("pgcarry_slot_", "pgcarry_wal_rate"))}


def _samples(workdir) -> list:  # type: ignore[type-arg]
    log = SQLiteLog(workdir / "pgcarry-log.db", readonly=True)
    try:
        return (log.get_state("wal_samples") or {}).get("samples") or []
    finally:
        log.close()


def _daemon_with_metrics(workdir, src) -> dict[str, float]:
    """Run the daemon with metrics while 2 MB of WAL is written; the metrics once they hold an
    estimate. The daemon keeps the slot advancing, so safe_wal_size stays near its cap."""
    port = free_port()
    proc = spawn(workdir, "capture", "--metrics-port", str(port))
    try:
        wait_running(workdir, proc)
        deadline = time.monotonic() + 30
        while not _samples(workdir):  # the daemon's first sample, before the WAL below
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        execute(src, "SELECT pg_logical_emit_message(false, 'pgcarry-test', repeat('x', 2 * 1024 * 1024))")
        while True:
            m = _metrics(port)
            if not math.isnan(m.get("pgcarry_slot_invalidation_seconds", math.nan)):
                return m
            assert time.monotonic() < deadline, m
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_forecast_then_warning_code_then_lost_slot(capped_cluster, workdir):
    src = capped_cluster.createdb("shop")
    execute(src, "CREATE TABLE t (id integer PRIMARY KEY)")
    write_config(workdir, src)
    (workdir / "pgcarry.toml").write_text((workdir / "pgcarry.toml").read_text().replace(
        "[capture]\n", f"[capture]\nslot-warning-hours = {THRESHOLD_S / 3600}\n"))
    started = cli(workdir, "start", "--set-replica-identity")
    warning = [ln for ln in started.stderr.splitlines() if ln.startswith("pgcarry: WARNING:")]
    assert warning and warning[0].startswith(
        "pgcarry: WARNING: max_slot_wal_keep_size is 16.0 MB: the source invalidates the slot (and "
        "the capture is lost) once it holds back that much WAL; that is about ")
    assert " at the server's average since " in warning[0]
    assert "of WAL: if capture stops or falls behind for longer, the slot is lost" in warning[0]
    assert started.stderr.index("max_slot_wal_keep_size") < started.stderr.index("slot pgcarry created")

    # the daemon's metrics: safe_wal_size as the source says it, and an estimate in seconds
    m = _daemon_with_metrics(workdir, src)
    assert 15 * MB < m["pgcarry_slot_safe_wal_bytes"] <= 32 * MB
    assert m["pgcarry_wal_rate_bytes_per_second"] > 0
    assert m["pgcarry_slot_invalidation_seconds"] == pytest.approx(
        m["pgcarry_slot_safe_wal_bytes"] / m["pgcarry_wal_rate_bytes_per_second"], rel=1e-6)
    (t0, lsn0), = _samples(workdir)  # one sample: the daemon ran < 60 s

    # daemon stopped: the slot stops advancing. 1 MB more: the estimate is long, exit 0
    execute(src, "SELECT pg_logical_emit_message(false, 'pgcarry-test', repeat('x', 1024 * 1024))")
    before, t_before = _safe(src), time.time()
    out = cli_json(workdir, "status")
    after, t_after = _safe(src), time.time()
    f = out["slot"]["forecast"]
    assert after <= f["safe_wal_bytes"] <= before and 14 * MB < f["safe_wal_bytes"]
    grown = query(src, "SELECT pg_wal_lsn_diff(%s::pg_lsn, '0/0')::bigint",
                  (out["slot"]["current_lsn"],))[0][0] - lsn0
    assert grown > 3 * MB  # the 2 MB written under the daemon and the 1 MB after it
    rate = f["wal_rate_bytes_per_second"]
    assert grown / (t_after - t0) - 1 <= rate <= grown / (t_before - t0) + 1
    assert f["rate_source"].startswith("capture samples over the last ")
    assert f["invalidation_seconds"] == round(f["safe_wal_bytes"] / rate, 1)
    assert f["invalidation_seconds"] > THRESHOLD_S and f["at_risk"] is False
    assert f["warning_seconds"] == pytest.approx(THRESHOLD_S)
    assert not [w for w in out["warnings"] if "AT RISK" in w]

    # the writer fills the WAL until less than 768 kB is safe: below the threshold, exit 6
    _fill(src, 256 * 1024, 768 * 1024)
    st = cli(workdir, "status", check=False)
    assert st.returncode == 6, st.stderr
    line = next(ln for ln in st.stdout.splitlines() if ln.startswith("slot safety"))
    assert line.startswith("slot safety   safe_wal_size ") and line.endswith(" -- AT RISK")
    assert "(capture samples over the last " in line and "; invalidated in " in line
    assert "pgcarry: WARNING: SLOT AT RISK: at " in st.stderr
    assert "the source invalidates slot pgcarry in " in st.stderr
    assert "raise max_slot_wal_keep_size" in st.stderr

    # past safe_wal_size a checkpoint invalidates the slot: LOST, exit 3 (the existing handling)
    _fill(src, 256 * 1024, 0)
    unreserved = cli(workdir, "status", check=False)
    assert unreserved.returncode == 6 and "the next checkpoint invalidates it" in unreserved.stderr
    execute(src, "CHECKPOINT")
    assert query(src, "SELECT wal_status, safe_wal_size FROM pg_replication_slots") == [("lost", None)]
    lost = cli(workdir, "status", check=False)
    assert lost.returncode == 3 and "pgcarry: WARNING: SLOT LOST" in lost.stderr
    assert "AT RISK" not in lost.stderr


def test_no_limit_no_warning(source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY)")
    write_config(workdir, source_dsn)
    started = cli(workdir, "start", "--set-replica-identity")
    assert "WARNING" not in started.stderr
    out = cli_json(workdir, "status")
    assert out["slot"]["safe_wal_bytes"] is None
    f = out["slot"]["forecast"]
    assert (f["safe_wal_bytes"], f["invalidation_seconds"], f["at_risk"]) == (None, None, False)
    text = cli(workdir, "status")
    assert "slot safety   no limit (max_slot_wal_keep_size = -1)" in text.stdout


def test_readme_alert_rules_parse_and_name_real_metrics():
    import re as re_
    from pathlib import Path

    import yaml

    from pgcarry.capture import metrics

    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = re_.search(r"```yaml\n(groups:.*?)```", text, re_.S)
    assert block
    rules = yaml.safe_load(block.group(1))["groups"][0]["rules"]
    source = Path(metrics.__file__).read_text()
    for rule in rules:
        (name,) = re_.findall(r"pgcarry_\w+", rule["expr"])
        assert f'"{name}"' in source, name
    assert [r["alert"] for r in rules] == ["PgcarrySlotNearInvalidation", "PgcarrySlotSafeWalLow"]
