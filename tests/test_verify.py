"""verify against a real target after a real replay: passes, then fails on tampering."""

from __future__ import annotations

import psycopg

from pgcarry.replay import replay
from pgcarry.replay.verify import verify
from tests.test_replay_net import P, _traffic, cfg, target  # noqa: F401 - fixture
from tests.walgen import Wal, write_log


def _failed(checks):
    return [(c.name, c.table) for c in checks if not c.ok]


def test_verify_passes_then_names_the_tampered_row(target, workdir):  # noqa: F811
    w = Wal()
    log = write_log(workdir / "log.db", _traffic(w))
    c = cfg(workdir, tables={P: {"columns": {"n": "delta"}}})
    c.verify = c.verify.model_validate({"assert": [{"name": "n >= 0", "sql": "SELECT bool_and(n >= 0) FROM parent"}]})
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE parent SET n = 100 WHERE id = 1")  # test side restocked
    assert verify(c, log, target)[0].name == "journal" and _failed(verify(c, log, target))
    replay(c, log, target)
    checks = verify(c, log, target)
    assert _failed(checks) == []
    names = {ch.name for ch in checks}
    assert {"counts", "final images", "foreign key", "sequence", "assertion"} <= names
    with psycopg.connect(target) as conn:  # n = 100 + (9 - 10) = 99 is right; tamper with it
        assert conn.execute("SELECT n FROM parent WHERE id = 1").fetchone() == (99,)
        conn.execute("UPDATE parent SET n = 98 WHERE id = 1")
        conn.execute("DELETE FROM child WHERE id = 10")
    checks = verify(c, log, target)
    bad = {ch.table: ch.detail for ch in checks if not ch.ok}
    assert "key (1)" in bad["public.parent"] and "n differ" in bad["public.parent"]
    assert "key (10)" in bad["public.child"] and "row missing" in bad["public.child"]


def test_verify_fails_a_false_assertion_and_orphans(target, workdir):  # noqa: F811
    w = Wal()
    log = write_log(workdir / "log.db", _traffic(w))
    c = cfg(workdir)
    c.verify = c.verify.model_validate({"assert": [{"name": "no big", "sql": "SELECT count(*) = 0 FROM parent"}]})
    replay(c, log, target)
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM parent WHERE id = 4")
    failed = _failed(verify(c, log, target))
    assert ("assertion", "no big") in failed and ("foreign key", "public.child") in failed
