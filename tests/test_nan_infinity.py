"""NaN and ±Infinity. wal2json 2.6+ sends numbers as text with numeric-data-types-as-string, and
pgcarry uses it: NaN and ±Infinity replay exactly in nullable real, double precision and numeric
columns and as key parts. An older wal2json (Debian 12 ships 2.5) sends them as null: preflight
refuses such a capture unless `accept-nan-as-null`, and a log captured that way keeps the old
guard (a null for a NOT NULL target column is refused, not written)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.replay import replay
from pgcarry.replay.verify import verify
from pgcarry.schemas.change import NUMBERS_AS_TEXT
from pgcarry.schemas.config import parse
from pgcarry.schemas.manifest import Column, Manifest, TableInfo
from tests.helpers import NAN_AS_NULL, cli, cli_json, execute, query, write_config
from tests.walgen import Wal, write_log

INF, NAN = float("inf"), float("nan")
DDL = ("CREATE TABLE m (a numeric, b float8, r real, d double precision, n numeric, "
       "PRIMARY KEY (a, b))")
T0 = "INSERT INTO m VALUES (1, 1, 1, 1, 1), ('NaN', 'Infinity', 2, 2, 2), (3, '-Infinity', 3, 3, 3)"


def _as_text_supported(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('nan_probe', 'wal2json', true)")
        try:
            conn.execute("SELECT count(*) FROM pg_logical_slot_peek_changes('nan_probe', NULL, 1, "
                         "%s, '1')", (NUMBERS_AS_TEXT,))
            return True
        except psycopg.Error:
            return False


def _rows(dsn: str) -> list[tuple[object, ...]]:
    # NaN != NaN in Python: compare the text PostgreSQL prints
    return query(dsn, "SELECT a::text, b::text, r::text, d::text, n::text FROM m ORDER BY a, b")


WANT = [("1", "1", "Infinity", "NaN", "-Infinity"), ("5", "5", None, None, None),
        ("6", "6", "1.5", "NaN", "NaN"), ("NaN", "Infinity", "2", "2", "NaN"),
        ("NaN", "NaN", "NaN", "-Infinity", "Infinity")]


def _numbers_as_text_log(path) -> SQLiteLog:  # type: ignore[no-untyped-def]
    """A log as wal2json 2.6 writes it with numeric-data-types-as-string: every number a string."""
    types = {"a": "numeric", "b": "double precision", "r": "real", "d": "double precision", "n": "numeric"}
    w = Wal(types={"public.m": types}, pk={"public.m": ["a", "b"]})
    row = lambda a, b, r, d, n: {"a": a, "b": b, "r": r, "d": d, "n": n}  # noqa: E731
    log = write_log(path, [
        w.txn(w.ins("public.m", **row("NaN", "NaN", "NaN", "-Infinity", "Infinity")),
              w.ins("public.m", **row("5", "5", None, None, None))),
        w.txn(w.upd("public.m", row("1", "1", "1", "1", "1"), row("1", "1", "Infinity", "NaN", "-Infinity")),
              w.upd("public.m", row("NaN", "Infinity", "2", "2", "2"), row("NaN", "Infinity", "2", "2", "NaN")),
              w.dele("public.m", **row("3", "-Infinity", "3", "3", "3"))),
        w.txn(w.ins("public.m", **row("6", "6", "NaN", "NaN", "NaN"))),
        w.txn(w.upd("public.m", row("6", "6", "NaN", "NaN", "NaN"), row("6", "6", "1.5", "NaN", "NaN"))),
    ])
    log.write_manifest(Manifest(
        slot="pgcarry", plugin_options={NUMBERS_AS_TEXT: "1"}, consistent_point="0/1000000",
        snapshot=None, created_at="2026-01-01T00:00:00+00:00", system_identifier="0", database="x",
        tables={"public.m": TableInfo(schema_name="public", name="m", primary_key=["a", "b"],
                                      replica_identity="full",
                                      columns=[Column(name=c, type=t) for c, t in types.items()])}))
    return log


@pytest.mark.parametrize("mode", ["net", "txn"])
def test_numbers_as_text_replay_nan_and_infinity_exactly(target_dsn, tmp_path, mode):
    execute(target_dsn, DDL, T0)
    log = _numbers_as_text_log(tmp_path / "log.db")
    cfg = parse({"source": {"dsn": target_dsn}, "replay": {  # delta: ours + (new - old), NaN too
        "mode": mode, "tables": {"public.m": {"columns": {"n": "delta"}}}}})
    rep = replay(cfg, log, target_dsn)
    assert rep.status == "applied" and rep.plan is not None and rep.plan.conflicts == []
    assert _rows(target_dsn) == WANT
    assert [c for c in verify(cfg, log, target_dsn) if not c.ok] == []


def test_capture_sends_nan_and_infinity_exactly_or_preflight_refuses(source_dsn, target_dsn, workdir):
    execute(source_dsn, DDL, T0)
    write_config(workdir, source_dsn)
    if not _as_text_supported(source_dsn):
        out = cli(workdir, "start", check=False)
        assert out.returncode == 2
        assert ("this wal2json (before 2.6) sends NaN and ±Infinity as null: in public.m.r, public.m.d, "
                "public.m.n they would silently become NULL") in out.stderr
        assert "install wal2json 2.6 or later" in out.stderr and "accept-nan-as-null = true" in out.stderr
        pytest.skip("the installed wal2json is older than 2.6 (Debian 12 ships 2.5): the exact path "
                    "is proved from a 2.6-format log above, and runs here with a newer wal2json")
    t0 = cli_json(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    assert t0["plugin_options"][NUMBERS_AS_TEXT] == "1"
    execute(source_dsn, "INSERT INTO m VALUES ('NaN', 'NaN', 'NaN', '-Infinity', 'Infinity'), (5, 5, NULL, NULL, NULL)",
            "UPDATE m SET r = 'Infinity', d = 'NaN', n = '-Infinity' WHERE a = 1",
            "UPDATE m SET n = 'NaN' WHERE a = 'NaN' AND b = 'Infinity'", "DELETE FROM m WHERE a = 3",
            "INSERT INTO m VALUES (6, 6, 'NaN', 'NaN', 'NaN')", "UPDATE m SET r = 1.5 WHERE a = 6")
    cli(workdir, "capture", "--until", "current")
    cli(workdir, "replay", "--to", target_dsn)
    assert _rows(source_dsn) == _rows(target_dsn) == WANT
    assert cli_json(workdir, "verify", "--to", target_dsn)["ok"]


def test_a_log_captured_without_numbers_as_text_refuses_lost_values(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE m (id int PRIMARY KEY, n numeric NOT NULL, "
                        "f float8 NOT NULL, g float8)",
            "INSERT INTO m VALUES (3, 1, 1, 1)")
    write_config(workdir, source_dsn, capture=NAN_AS_NULL)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    log = SQLiteLog(workdir / "pgcarry-log.db")  # an old log: captured without the option
    manifest = log.read_manifest()
    assert manifest is not None
    manifest.plugin_options.pop(NUMBERS_AS_TEXT, None)
    log.write_manifest(manifest)
    log.close()
    execute(source_dsn, "INSERT INTO m VALUES (1, 'NaN', 'Infinity', '-Infinity')",
            "INSERT INTO m VALUES (2, 1.5, 2.5, 3.5)",
            "UPDATE m SET f = '-Infinity' WHERE id = 3")
    cli(workdir, "capture", "--until", "current")

    plan = cli_json(workdir, "replay", "--to", target_dsn, "--dry-run")
    lost = sorted((c["key"], c["column"]) for c in plan["conflicts"] if c["kind"] == "lost-value")
    assert lost == [(["1"], "f"), (["1"], "n"), (["3"], "f")]
    out = cli(workdir, "replay", "--to", target_dsn, check=False)
    assert out.returncode == 4
    assert "is null in the log but NOT NULL in the target: production wrote NaN or Infinity" in out.stderr
    assert "table=public.m" in out.stderr
    assert query(target_dsn, "SELECT * FROM m") == [(3, 1, 1.0, 1.0)]  # nothing changed

    execute(source_dsn, "UPDATE m SET n = 0, f = 0 WHERE id = 1", "UPDATE m SET f = 0 WHERE id = 3")
    cli(workdir, "capture", "--until", "current")
    cli(workdir, "replay", "--to", target_dsn)
    assert query(target_dsn, "SELECT * FROM m ORDER BY id") == [
        (1, Decimal(0), 0.0, None),  # the old logs' limit: g was -Infinity on production
        (2, Decimal("1.5"), 2.5, 3.5), (3, Decimal(1), 0.0, 1.0)]
    assert query(source_dsn, "SELECT g FROM m WHERE id = 1") == [(-INF,)]
