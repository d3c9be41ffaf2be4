"""Preflight refusals: each names the problem and the fix, exits 2, and creates nothing."""

import pytest

from pgcarry.playground.localpg import LocalCluster
from tests.helpers import cli, execute, query, write_config


def _refusal(workdir, dsn, *args):
    proc = cli(workdir, "start", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "pgcarry-log.db").exists()
    return proc.stderr


@pytest.fixture(scope="module")
def bad_cluster():
    """wal_level=replica, one slot (taken), no WAL senders."""
    c = LocalCluster("bad", {"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "0"}).start()
    execute(c.dsn(), "SELECT pg_create_physical_replication_slot('taken')")
    yield c
    c.destroy()


def test_server_settings_refused(bad_cluster, workdir):
    dsn = bad_cluster.dsn()
    execute(dsn, "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)", "ALTER TABLE t REPLICA IDENTITY FULL")
    write_config(workdir, dsn)
    err = _refusal(workdir, dsn)
    assert "wal_level is 'replica', logical decoding needs 'logical' -- fix: ALTER SYSTEM SET wal_level = logical" in err
    assert "no free replication slot" in err
    assert "no free WAL sender (max_wal_senders are all busy) -- fix: raise max_wal_senders" in err
    assert err.rstrip().endswith("(hint: nothing was created)")


def test_wal2json_missing_refused(workdir):
    with LocalCluster("noplugin", {"dynamic_library_path": "'/nonexistent'"}) as c:
        execute(c.dsn(), "CREATE TABLE t (id int PRIMARY KEY)", "ALTER TABLE t REPLICA IDENTITY FULL")
        write_config(workdir, c.dsn())
        err = _refusal(workdir, c.dsn())
        assert "the wal2json output plugin is not installed" in err
        assert "apt-get install postgresql-15-wal2json" in err
        assert query(c.dsn(), "SELECT count(*) FROM pg_replication_slots") == [(0,)]


def test_tables_and_slot_refused_then_fixed(source_dsn, workdir):
    execute(source_dsn, "CREATE TABLE keyed (id int PRIMARY KEY, v int)",
            "CREATE TABLE loose (v int)", "CREATE TABLE optout (id int PRIMARY KEY)")
    write_config(workdir, source_dsn, extra='[capture.identity]\n"public.optout" = "default"\n')
    err = _refusal(workdir, source_dsn)
    assert ("public.loose has no primary key and REPLICA IDENTITY DEFAULT: its UPDATEs and DELETEs "
            "would vanish from the stream -- fix: ALTER TABLE public.loose REPLICA IDENTITY FULL") in err
    assert "apply delta columns for: public.keyed -- fix: run `pgcarry start --set-replica-identity`" in err
    assert "optout" not in err.split("for:")[1].split("--")[0]

    # --set-replica-identity makes a table without any key capturable too (FULL; replayed as inserts)
    cli(workdir, "start", "--set-replica-identity")
    assert query(source_dsn, "SELECT relname, relreplident::text FROM pg_class WHERE relname IN "
                             "('keyed', 'loose', 'optout') ORDER BY 1") == [
        ("keyed", "f"), ("loose", "f"), ("optout", "d")]

    (workdir / "pgcarry-log.db").rename(workdir / "first.db")
    err = _refusal(workdir, source_dsn, "--set-replica-identity")
    assert "replication slot 'pgcarry' already exists" in err


def test_nothing_matches(source_dsn, workdir):
    write_config(workdir, source_dsn, tables=["sales.*"])
    assert "no table matches [capture] tables = ['sales.*']" in _refusal(workdir, source_dsn)
