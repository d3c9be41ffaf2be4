"""`pgcarry cutover` against real PostgreSQL: production traffic until the fence, a failure after the
slot is gone (production stays fenced, writes refused), a re-run that completes; every pre-fence
transaction present, masked columns back to production's values, writes working after unfence."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import psycopg
import pytest

from pgcarry.playground import shop
from pgcarry.cutover.demo import MASKS
from pgcarry.schemas.dsn import with_options
from pgcarry.changelog.sqlite import SQLiteLog
from tests.helpers import cli, execute, query, spawn, wait_running, write_config

COUPONS = '\n[replay.tables."public.coupons"]\ninsert-exists = "target-wins"\n'
PROD_ONLY = ["profiles", "orders", "order_items", "order_shipping", "order_payments", "user_coupons"]


def _snapshot(dsn):
    with psycopg.connect(dsn) as c:
        return {t: c.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in PROD_ONLY}


def _traffic(dsn, stop, committed):
    rng = random.Random(5)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            users = [r[0] for r in c.execute("SELECT id::text FROM profiles")]
            shop.traffic(c, rng)
            while not stop.is_set():
                committed.append(shop.place_order(c, rng, rng.choice(users)))
    except psycopg.Error:
        pass  # the fence terminated this session


@pytest.fixture
def prepared(source_dsn, target_dsn, workdir):
    role = f"app_{os.getpid()}_{random.randrange(10**6)}"
    with psycopg.connect(source_dsn, autocommit=True) as c:
        shop.create(c)
        shop.seed(c, random.Random(1), profiles=30, products=20, orders=40)
        c.execute("UPDATE product_variants SET stock_quantity = 1000")
        c.execute("UPDATE products SET stock_quantity = 1000")
        c.execute(f'CREATE ROLE "{role}" LOGIN')
        c.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
        c.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    write_config(workdir, source_dsn, slot="cutover_t", extra=shop.POLICY_TOML + MASKS + COUPONS)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    return with_options(source_dsn, user=role)


def test_cutover_with_traffic_fence_resume_and_unmask(source_dsn, target_dsn, workdir, prepared):
    app = prepared
    assert query(target_dsn, "SELECT count(*) FROM profiles WHERE email LIKE '%@example.com'") == [(0,)]
    stop, committed = threading.Event(), []
    worker = threading.Thread(target=_traffic, args=(app, stop, committed))
    worker.start()
    execute(target_dsn,  # the test side develops meanwhile
            "UPDATE products SET title = title || ' v2' WHERE id <= 5",
            "ALTER TABLE products ADD COLUMN badge text NOT NULL DEFAULT 'none'",
            "INSERT INTO profiles (email, phone) VALUES ('dev@test.local', '010-1234-5678')")
    while len(committed) < 20:
        worker.join(0.1)
    dry = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--dry-run", "--json").stdout)
    assert dry["phases"][0] == "fence" and dry["plan"]["status"] in ("dry-run", "nothing")
    first = cli(workdir, "cutover", "--from", target_dsn, "--yes", check=False,
                env={"PGCARRY_CUTOVER_FAIL_BEFORE": "overwrite"})
    assert first.returncode != 0 and "stopped before phase overwrite" in first.stderr
    stop.set()
    worker.join(10)
    before = _snapshot(source_dsn)  # production at the fence (reads still work)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        execute(app, "INSERT INTO coupons (code, discount) VALUES ('FENCED', 1)")
    assert query(source_dsn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cutover_t'"
                 ) == [(0,)]
    out = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json").stdout)
    assert out["complete"] and out["downtime_seconds"] > 0
    assert [p["phase"] for p in out["phases"] if p["status"] == "done"][0] == "fence"
    backup = out["backup"]
    assert oct(os.stat(backup).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(backup)).st_mode & 0o777) == "0o700"
    after = _snapshot(source_dsn)
    for t in PROD_ONLY:  # every pre-fence write, with production's real (unmasked) values
        want = before[t]
        got = [r for r in after[t] if t != "profiles" or r[1] != "dev@test.local"]
        assert got == want, t
    assert set(committed) <= {str(r[0]) for r in query(source_dsn, "SELECT id FROM orders")}
    assert query(source_dsn, "SELECT phone FROM profiles WHERE email = 'dev@test.local'") == [
        ("010-1234-5678",)]  # a test-created row keeps its own value
    assert query(source_dsn, "SELECT count(*) FROM products WHERE title LIKE '%v2'") == [(5,)]
    assert query(source_dsn, "SELECT count(*) FROM products WHERE badge = 'none'") == \
        query(source_dsn, "SELECT count(*) FROM products")
    assert query(source_dsn, "SELECT to_regnamespace('pgcarry_unmask')") == [(None,)]
    execute(app, "INSERT INTO coupons (code, discount) VALUES ('AFTER', 1)")  # unfenced
    again = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json").stdout)
    assert again["complete"] and again["backup"] == backup  # nothing repeated


def _slot_lsn(dsn):
    return query(dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cutover_t'")


def _both_sides(source_dsn, target_dsn):
    with psycopg.connect(source_dsn, autocommit=True) as c:
        shop.traffic(c, random.Random(3))
        c.execute("INSERT INTO coupons (id, code, discount) VALUES (1001, 'PROD-1001', 7)")
    execute(target_dsn, "INSERT INTO coupons (id, code, discount) VALUES (1001, 'TEST-1001', 3)",
            "UPDATE products SET title = title || ' v2' WHERE id <= 3")


def test_rehearse_touches_nothing_and_predicts_the_conflicts(source_dsn, target_dsn, workdir, prepared):
    _both_sides(source_dsn, target_dsn)
    cli(workdir, "capture", "--until", "current")
    lsn = _slot_lsn(source_dsn)
    with psycopg.connect(source_dsn) as c:
        before = shop.checksum(c)
    rep = json.loads(cli(workdir, "rehearse", "--from", target_dsn, "--json").stdout)
    assert rep["ok"] and not rep["kept"] and rep["expected_downtime_seconds"] > 0
    assert [(c["table"], c["key"]) for c in rep["conflicts"]] == [("public.coupons", ["1001"])]
    assert _slot_lsn(source_dsn) == lsn
    with psycopg.connect(source_dsn) as c:
        assert shop.checksum(c) == before
    assert query(source_dsn, "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgcarry_rehearse%'"
                 ) == [(0,)]
    out = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json").stdout)
    replayed = next(p for p in out["phases"] if p["phase"] == "replay")["detail"]
    assert replayed["conflicts"] == rep["conflicts"]
    assert query(source_dsn, "SELECT code FROM coupons WHERE id = 1001") == [("TEST-1001",)]


def _state(workdir):
    log = SQLiteLog(workdir / "pgcarry-log.db")
    try:
        return (log.get_state("cutover") or {}).get("phases", {})
    finally:
        log.close()


@pytest.mark.parametrize("phase", ["overwrite", "replay"])
def test_kill_during_a_phase_then_resume(source_dsn, target_dsn, workdir, prepared, phase):
    _both_sides(source_dsn, target_dsn)
    before = _snapshot(source_dsn)
    proc = spawn(workdir, "cutover", "--from", target_dsn, "--yes")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _state(workdir).get(phase, {}).get("status") == "running":
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the cutover ended before it could be killed"
    assert _state(workdir)[phase]["status"] == "running"
    out = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json").stdout)
    assert out["complete"]
    rec = next(p for p in out["phases"] if p["phase"] == phase)
    assert rec["status"] == "done"
    after = _snapshot(source_dsn)
    for t in PROD_ONLY:
        assert after[t] == before[t], t
    assert query(source_dsn, "SELECT count(*) FROM pgcarry.replay_journal") == [(1,)]
    assert query(source_dsn, "SELECT code FROM coupons WHERE id = 1001") == [("TEST-1001",)]


def test_verify_failure_leaves_production_fenced(source_dsn, target_dsn, workdir, prepared):
    _both_sides(source_dsn, target_dsn)
    with open(workdir / "pgcarry.toml", "a") as f:
        f.write('\n[[verify.assert]]\nname = "impossible"\nsql = "SELECT false"\n')
    res = cli(workdir, "cutover", "--from", target_dsn, "--yes", check=False)
    assert res.returncode == 5
    assert "production stays fenced" in res.stderr and "pg_restore --clean" in res.stderr
    assert "pgcarry-backups" in res.stdout and "verify FAILED: assertion impossible" in res.stdout
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        execute(prepared, "INSERT INTO coupons (code, discount) VALUES ('FENCED', 1)")


def test_fence_and_unfence_commands(source_dsn, target_dsn, workdir, prepared):
    _both_sides(source_dsn, target_dsn)
    out = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json",
                         "--fence-cmd", "echo on > fence.flag",
                         "--unfence-cmd", "echo off > fence.flag").stdout)
    assert out["complete"] and (workdir / "fence.flag").read_text() == "off\n"
    assert query(source_dsn, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d "
                 "ON d.oid = s.setdatabase WHERE d.datname = current_database()") == [(0,)]
    execute(prepared, "INSERT INTO coupons (code, discount) VALUES ('OPEN', 1)")


def test_unfence_restores_previous_role_settings(source_dsn, prepared):
    from pgcarry.cutover import fence

    role = psycopg.conninfo.conninfo_to_dict(prepared)["user"]
    db = psycopg.conninfo.conninfo_to_dict(source_dsn)["dbname"]
    execute(source_dsn, f'ALTER ROLE "{role}" IN DATABASE "{db}" SET default_transaction_read_only = off')
    saved = fence.remember(source_dsn)
    assert saved["previous"][role] == "off" and saved["previous"]["postgres"] is None
    fence.apply(source_dsn, saved)
    assert query(prepared, "SHOW default_transaction_read_only") == [("on",)]
    assert query(fence.writable(source_dsn), "SHOW default_transaction_read_only") == [("off",)]
    fence.unfence(source_dsn, saved)
    assert query(prepared, "SHOW default_transaction_read_only") == [("off",)]
    assert query(source_dsn, "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r "
                 "ON r.oid = s.setrole JOIN pg_database d ON d.oid = s.setdatabase "
                 "WHERE r.rolname = 'postgres' AND d.datname = %s", (db,)) == []


def test_cutover_stops_a_running_capture_daemon_first(source_dsn, target_dsn, workdir, prepared):
    daemon = spawn(workdir, "capture")
    wait_running(workdir, daemon)
    with psycopg.connect(prepared, autocommit=True) as c:
        rng = random.Random(9)
        users = [r[0] for r in c.execute("SELECT id::text FROM profiles")]
        order = shop.place_order(c, rng, rng.choice(users))
    done = cli(workdir, "cutover", "--from", target_dsn, "--yes")
    assert f"stopped the capture daemon (pid {daemon.pid})" in done.stderr
    assert daemon.wait(timeout=30) == 0
    assert query(source_dsn, "SELECT count(*) FROM orders WHERE id::text = %s", (str(order),)) == [(1,)]
