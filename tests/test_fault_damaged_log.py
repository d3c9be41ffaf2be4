"""A damaged or foreign change log is refused with one clear line (exit 3) before anything is
applied: a truncated file, a corrupted page, a damaged, truncated or missing compressed chunk, a
deleted file, a log of another slot or source."""

from __future__ import annotations

import shutil
import sqlite3

from tests.helpers import cli, execute, query, write_config


def _case(workdir, name, dsn, *, slot="pgcarry"):
    d = workdir / name
    d.mkdir()
    shutil.copy(workdir / "pgcarry-log.db", d / "pgcarry-log.db")
    write_config(d, dsn, slot=slot)
    return d


def _refused(d, target_dsn, expected):
    out = cli(d, "replay", "--to", target_dsn, check=False)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgcarry: error: "), out.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


def _edit_chunk(d, sql):
    db = sqlite3.connect(d / "pgcarry-log.db")
    with db:
        cid = db.execute("SELECT id FROM chunks ORDER BY id LIMIT 1 OFFSET 1").fetchone()[0]
        db.execute(sql, (cid,))
    db.close()


def _refused_everywhere(d, source_dsn, target_dsn, expected):
    """replay, rehearse and cutover refuse before anything (no fence); status says so."""
    line = _refused(d, target_dsn, expected)
    for verb in (["rehearse", "--from", target_dsn], ["cutover", "--from", target_dsn, "--yes"]):
        out = cli(d, *verb, check=False)
        assert out.returncode == 3 and expected in out.stderr, (verb, out.stderr)
    assert query(source_dsn, "SHOW default_transaction_read_only") == [("off",)]
    st = cli(d, "status", "--offline", check=False)
    assert st.returncode == 3 and "WARNING: LOG DAMAGED" in st.stderr and expected in st.stderr, st.stderr
    return line


def test_damaged_and_foreign_logs_are_refused_and_nothing_is_applied(
        source_cluster, source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE t (id integer PRIMARY KEY, note text)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    for i in range(20):
        execute(source_dsn, "INSERT INTO t SELECT g, (SELECT string_agg(md5(g::text || k), '') FROM "
                            f"generate_series(1, 10) k) FROM generate_series({i * 100 + 1}, {i * 100 + 100}) g")
    cli(workdir, "capture", "--until", "current")
    assert not (workdir / "pgcarry-log.db-wal").exists()  # checkpointed: the file holds it all
    size = (workdir / "pgcarry-log.db").stat().st_size
    assert size > 200_000

    d = _case(workdir, "truncated", source_dsn)
    with open(d / "pgcarry-log.db", "r+b") as f:
        f.truncate(size * 2 // 3)
    _refused(d, target_dsn, "is damaged")

    d = _case(workdir, "corrupted", source_dsn)
    with open(d / "pgcarry-log.db", "r+b") as f:
        f.seek(4096 * (size // 4096 // 2))
        f.write(bytes(range(256)) * 16)
    _refused(d, target_dsn, "is damaged")

    d = _case(workdir, "chunk_flipped", source_dsn)  # bytes inside a stored chunk
    _edit_chunk(d, "UPDATE chunks SET data = CAST(substr(data, 1, 200) || x'deadbeef' || "
                   "substr(data, 205) AS BLOB) WHERE id = ?")
    line = _refused_everywhere(d, source_dsn, target_dsn, "is damaged: chunk")
    assert "doesn't match checksum" in line, line  # zstd's content checksum

    d = _case(workdir, "chunk_truncated", source_dsn)
    _edit_chunk(d, "UPDATE chunks SET data = substr(data, 1, length(data) / 2) WHERE id = ?")
    _refused_everywhere(d, source_dsn, target_dsn, "is damaged: chunk")

    d = _case(workdir, "chunk_missing", source_dsn)
    _edit_chunk(d, "DELETE FROM chunks WHERE id = ?")
    _refused_everywhere(d, source_dsn, target_dsn, "is damaged: 2000 changes committed, ")

    d = _case(workdir, "deleted", source_dsn)
    (d / "pgcarry-log.db").unlink()
    _refused(d, target_dsn, "pgcarry-log.db does not exist")

    d = _case(workdir, "other_slot", source_dsn, slot="other")
    _refused(d, target_dsn, "the change log belongs to slot 'pgcarry', not 'other'")

    other = source_cluster.createdb(f"{source_dsn.split('dbname=')[1]}_other")
    d = _case(workdir, "other_source", other)
    line = _refused(d, target_dsn, "but [source] is")
    assert "_other'" in line

    assert query(target_dsn, "SELECT count(*) FROM t") == [(0,)]
    assert query(target_dsn, "SELECT to_regclass('pgcarry.replay_journal') IS NULL") == [(True,)]
    cli(workdir, "replay", "--to", target_dsn)  # the intact log still replays
    assert query(target_dsn, "SELECT count(*), min(id), max(id) FROM t") == [(2000, 1, 2000)]
    execute(source_cluster.dsn(), f"DROP DATABASE {other.split('dbname=')[1]}")
