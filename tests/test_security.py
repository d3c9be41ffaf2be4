"""Secrets and access: a full cutover with password-authenticated roles (scram-sha-256) never prints
or stores the password; the log and backups are private (0600 in 0700 folders) even under umask 0;
the fence ends sessions that were connected before it and later sessions cannot write."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import psycopg
import pytest

from pgcarry.playground import shop
from pgcarry.cutover.demo import MASKS
from pgcarry.playground.localpg import LocalCluster
from pgcarry.schemas.dsn import with_options
from tests.helpers import cli, execute, query, write_config

PASSWORD = "Sup3r-S3cret;pa55 word'x"
APP_PASSWORD = "4pp-S3cret-Pw"
COUPONS = '\n[replay.tables."public.coupons"]\ninsert-exists = "target-wins"\n'


@pytest.fixture(scope="module")
def scram_cluster():
    c = LocalCluster("scram").init()
    hba = c.data / "pg_hba.conf"
    lines = ("host all carry 127.0.0.1/32 scram-sha-256\nhost replication carry 127.0.0.1/32 "
             "scram-sha-256\nhost all shopper 127.0.0.1/32 scram-sha-256\n")
    hba.write_text(lines + hba.read_text())
    c.start()
    execute(c.dsn(), "SET password_encryption = 'scram-sha-256'",
            "CREATE ROLE carry LOGIN SUPERUSER PASSWORD " + psycopg.sql.quote(PASSWORD),
            "CREATE ROLE shopper LOGIN PASSWORD " + psycopg.sql.quote(APP_PASSWORD))
    yield c
    c.destroy()


def _leaks(text: str) -> bool:
    return any(p in text for p in (PASSWORD, APP_PASSWORD, "Sup3r-S3cret", "4pp-S3cret"))


def test_cutover_with_passwords_leaks_nothing_and_fences(scram_cluster, target_dsn, workdir):
    c = scram_cluster
    admin = c.createdb("shop")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(with_options(admin, user="carry", password="wrong")).close()
    prod = with_options(admin, user="carry", password=PASSWORD)
    app = with_options(admin, user="shopper", password=APP_PASSWORD)
    with psycopg.connect(prod, autocommit=True) as conn:
        shop.create(conn)
        shop.seed(conn, random.Random(1), profiles=10, products=8, orders=10)
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO shopper")
        conn.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO shopper")
    cfg = write_config(workdir, "${PROD_URL}", slot="sec",
                       extra=shop.POLICY_TOML + MASKS + COUPONS)
    cfg.write_text(cfg.read_text().replace('path = "pgcarry-log.db"', 'path = "private/log.db"'))
    env = {"PROD_URL": prod}
    test_uri = f"postgresql://postgres:{PASSWORD.replace(';', '%3B').replace(' ', '%20').replace(chr(39), '%27')}" \
               f"@127.0.0.1:{target_dsn.split('port=')[1].split()[0]}/{target_dsn.split('dbname=')[1]}"
    outputs = []

    def run(*args, rc=0):
        p = cli(workdir, *args, check=False, env=env)
        assert p.returncode == rc, (args, p.stdout, p.stderr)
        outputs.append(p.stdout + p.stderr)
        return p

    old = os.umask(0)
    try:
        run("start", "--copy-to", test_uri, "--set-replica-identity", "--json")
    finally:
        os.umask(old)
    early = psycopg.connect(app, autocommit=True)  # connected before the fence
    with psycopg.connect(app, autocommit=True) as a:
        shop.traffic(a, random.Random(2))
    run("capture", "--until", "current", "--json")
    run("status")
    run("status", "--json")
    run("replay", "--to", test_uri, "--dry-run", "--json")
    run("rehearse", "--from", test_uri, "--json")
    run("cutover", "--from", test_uri, "--dry-run", "--json")
    run("capture", "--source", f"host=127.0.0.1 port=1 user=carry password={PASSWORD.split(';')[0]}",
        "--until", "current", rc=1)
    run("status", "--source", f"postgresql://carry:{PASSWORD[:12]}@127.0.0.1:1/x", "--json")
    failed = cli(workdir, "cutover", "--from", test_uri, "--yes", "--json", check=False,
                 env={**env, "PGCARRY_CUTOVER_FAIL_BEFORE": "overwrite"})
    assert failed.returncode != 0
    outputs.append(failed.stdout + failed.stderr)

    with pytest.raises(psycopg.OperationalError):  # the fence ended the early session
        early.execute("INSERT INTO coupons (code, discount) VALUES ('EARLY', 1)")
    with psycopg.connect(app) as late, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        late.execute("INSERT INTO coupons (code, discount) VALUES ('LATE', 1)")

    out = json.loads(run("cutover", "--from", test_uri, "--yes", "--json").stdout)
    assert out["complete"]
    assert json.loads(run("verify", "--to", prod, "--json").stdout)["ok"]
    with psycopg.connect(app, autocommit=True) as a:  # unfenced
        a.execute("INSERT INTO coupons (code, discount) VALUES ('AFTER', 1)")

    for text in outputs:
        assert not _leaks(text), text
    private = workdir / "private"
    assert oct(private.stat().st_mode & 0o777) == "0o700"
    files = [p for p in workdir.rglob("*") if p.is_file() and p.name != "pgcarry.toml"]
    assert any(p.name == "log.db" for p in files) and any(p.suffix == ".dump" for p in files)
    for p in files:
        assert not _leaks(p.read_bytes().decode("latin-1")), p
        if p.parent == private or p.suffix == ".dump":
            assert oct(p.stat().st_mode & 0o777) == "0o600", p
    backup = Path(out["backup"])
    assert oct(backup.parent.stat().st_mode & 0o777) == "0o700"
    assert query(prod, "SELECT count(*) FROM coupons WHERE code = 'AFTER'") == [(1,)]

