"""Exact T0: the copy and the captured stream meet at one LSN -- nothing missed, nothing twice."""

import threading

import psycopg

from tests.helpers import cli, execute, logged_changes, query, write_config


def test_every_committed_row_is_in_exactly_one_of_copy_and_log(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE events (id serial PRIMARY KEY, note text)",
            "CREATE TABLE users (id integer PRIMARY KEY, email text)",
            "INSERT INTO events (note) SELECT 'before' FROM generate_series(1, 500)",
            "INSERT INTO users VALUES (1, 'kim@example.com'), (2, 'lee@example.com')")
    write_config(workdir, source_dsn, extra=(
        "[[mask]]\ntable = \"public.users\"\ncolumn = \"email\"\n"
        "regex = \"^(.{3}).*(@.*)$\"\nreplace = \"\\\\1***\\\\2\"\n"))
    committed: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            while not stop.is_set():
                committed.append(conn.execute("INSERT INTO events (note) VALUES ('during') RETURNING id").fetchone()[0])

    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(committed) < 200:
            stop.wait(0.01)
        cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
        n_at_start = len(committed)
        while len(committed) < n_at_start + 200:
            stop.wait(0.01)
    finally:
        stop.set()
        t.join()
    cli(workdir, "capture", "--until", "current")

    copied = {r[0] for r in query(target_dsn, "SELECT id FROM events")}
    logged = [c.new["id"] for _, c in logged_changes(workdir) if c.table == "events"]
    everything = set(range(1, 501)) | set(committed)
    assert len(logged) == len(set(logged)), "a row was captured twice"
    assert copied.isdisjoint(logged), f"in both copy and log: {sorted(copied & set(logged))[:5]}"
    assert copied | set(logged) == everything
    assert len(copied) > 500 and len(logged) >= 200  # the writer really ran across T0
    assert query(target_dsn, "SELECT id, email FROM users ORDER BY id") == [
        (1, "kim***@example.com"), (2, "lee***@example.com")]
    assert query(source_dsn, "SELECT email FROM users WHERE id = 1") == [("kim@example.com",)]
    manifest = cli(workdir, "status", "--json").stdout
    assert '"copy_target"' in manifest


def test_snapshot_only_holds_the_snapshot_for_your_own_dump(source_dsn, target_dsn, workdir):
    import subprocess
    import sys

    from pgcarry.capture.copy import restore
    from pgcarry.pgtools import pg_tool

    execute(source_dsn, "CREATE TABLE events (id serial PRIMARY KEY)",
            "ALTER TABLE events REPLICA IDENTITY FULL",
            "INSERT INTO events SELECT FROM generate_series(1, 100)")
    write_config(workdir, source_dsn)
    proc = subprocess.Popen([sys.executable, "-m", "pgcarry", "start", "--snapshot-only"], cwd=workdir,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("snapshot "), line
    snapshot = line.split()[1]
    execute(source_dsn, "INSERT INTO events SELECT FROM generate_series(1, 5)")  # after T0
    dump_dir = workdir / "dump"
    subprocess.run([pg_tool("pg_dump"), f"--snapshot={snapshot}", "-Fd", "-f", str(dump_dir),
                    "-d", source_dsn], check=True)
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    restore(target_dsn, dump_dir, 1)
    cli(workdir, "capture", "--until", "current")
    assert query(target_dsn, "SELECT count(*), max(id) FROM events") == [(100, 100)]
    assert sorted(c.new["id"] for _, c in logged_changes(workdir)) == [101, 102, 103, 104, 105]
