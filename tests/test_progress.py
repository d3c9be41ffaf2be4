"""Progress of the copy, the drain and the replay: a bar with amount, rate and time left on a
terminal (a real pseudo-terminal), plain lines in a pipe, nothing with --json."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import psycopg

from pgcarry import progress as prog
from pgcarry.capture import copy as copy_mod
from pgcarry.cli.progress import LinesProgress
from tests.helpers import cli, execute, query, write_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_pty(workdir, *args: str) -> tuple[int, str, str]:
    """Run `pgcarry ARGS` with stderr on a pseudo-terminal (120 columns): (exit code, stdout,
    what the terminal received)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "pgcarry", *args], cwd=workdir, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read()  # type: ignore[union-attr]
    return proc.wait(timeout=60), out, b"".join(chunks).decode()


def _bar(screen: str, label: str) -> str:
    """The last state of the bar `label` as the terminal shows it (after the last \\r)."""
    lines = [seg for seg in re.split(r"[\r\n]", ANSI.sub("", screen)) if seg.startswith(label)]
    assert lines, f"no bar {label!r} in {screen!r}"
    return lines[-1]


def test_plain_lines_say_amount_rate_and_time_left():
    out = io.StringIO()
    p = LinesProgress(out, interval=0)
    with p.task("replay: stage", total=4000) as t:
        t.advance(1000)
    p.note("staged")
    with p.task("copy: restore", total=4 * 1024 * 1024, unit=prog.BYTES) as t:
        t.update(1024 * 1024)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"replay: stage: 1000 rows of 4000 rows \(25%\), [\d.]+[kMG]? rows/s, "
                        r"\d\d:\d\d left", lines[0]), lines[0]
    assert re.fullmatch(r"replay: stage: 4000 rows of 4000 rows \(100%\), [\d.]+[kMG]? rows/s, "
                        r"done in \d\d:\d\d", lines[1]), lines[1]
    assert lines[2] == "staged"
    assert re.fullmatch(r"copy: restore: 1\.00MB of 4\.00MB \(25%\), [\d.]+[kMG]?B/s, \d\d:\d\d left",
                        lines[3]), lines[3]


def test_null_progress_and_watch_cost_nothing():
    task = prog.NULL.task("x", total=10)
    with prog.watch(task, lambda: 1 / 0):  # never polled: nobody sees it
        task.advance(3)
    assert (task.done, task.shown) == (3, False)
    task.update(50)
    assert task.done == 10  # an estimate past its total stops at the total


def test_copy_measures_follow_a_running_copy_and_a_growing_target(source_dsn, target_dsn):
    """The dump's figure is pg_stat_progress_copy of a COPY TO, capped at the table's size, and
    the whole size once it finished; the restore's is the target database's growth."""
    execute(source_dsn, "CREATE TABLE big (id integer PRIMARY KEY, v text)",
            "INSERT INTO big SELECT g, (SELECT string_agg(md5(g::text || i), '') FROM "
            "generate_series(1, 32) i) FROM generate_series(1, 16000) g")  # 16 MB, incompressible
    sizes = {oid: t for oid, (t, _) in copy_mod._sizes(source_dsn, ["public"]).items()}
    (size,) = sizes.values()
    with psycopg.connect(source_dsn) as reader, psycopg.connect(source_dsn, autocommit=True) as watcher:
        measure = copy_mod._dumped(sizes)(watcher)
        assert measure() == 0
        with reader.cursor() as cur, cur.copy("COPY big TO STDOUT") as cp:
            cp.read()  # one block, then the server waits with its buffers full
            seen = [measure() for _ in range(20)]
            assert 0 < seen[-1] < size, seen
            while cp.read():
                pass
        assert measure() == size  # no longer copying: counted whole
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        grown = copy_mod._restored(conn)
        before = grown()
        conn.execute("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 4) v FROM "
                     "generate_series(1, 20000) g")
        assert before < 100_000 and grown() > 2_000_000


def _shop(src: str) -> None:
    execute(src, "CREATE TABLE items (id integer PRIMARY KEY, note text)",
            "INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g")


def test_bar_on_a_terminal_lines_in_a_pipe_nothing_in_json(source_dsn, target_dsn, workdir):
    _shop(source_dsn)
    write_config(workdir, source_dsn)
    rc, _, screen = on_pty(workdir, "start", "--set-replica-identity", "--copy-to", target_dsn)
    assert rc == 0, screen
    for label in ("copy: dump", "copy: restore"):  # bytes, with the rate and the time left
        assert re.search(r": 100%\|█+\| [\d.]+[kM]?/[\d.]+[kM]?B \[\d\d:\d\d<00:00, +[\d.]+[kMG]?B/s\]",
                         _bar(screen, label)), _bar(screen, label)
    assert query(target_dsn, "SELECT count(*) FROM items") == [(5000,)]

    execute(source_dsn, "INSERT INTO items SELECT g, 'new' FROM generate_series(5001, 8000) g",
            "UPDATE items SET note = 'changed' WHERE id <= 2000")
    rc, _, screen = on_pty(workdir, "capture", "--until", "current")
    assert rc == 0, screen
    drain = _bar(screen, "drain to ")
    assert re.search(r": 100%\|█+\| [\d.]+[kM]?/[\d.]+[kM]?B \[\d\d:\d\d<00:00, +[\d.]+[kMG]?B/s\]",
                     drain), drain

    rc, out, screen = on_pty(workdir, "replay", "--to", target_dsn)
    assert rc == 0, screen
    assert re.search(r"\| 5\.00k/5\.00k changes \[\d\d:\d\d<00:00, +[\d.]+k? changes/s\]",
                     _bar(screen, "replay: read the log")), screen
    assert re.search(r"\| 5\.00k/5\.00k rows \[\d\d:\d\d<00:00, +[\d.]+k? rows/s\]",
                     _bar(screen, "replay: stage")), screen
    assert re.search(r"\| 5\.00k/5\.00k rows \[", _bar(screen, "replay: apply")), screen
    assert "replayed: 2 transactions, 5000 changes" in out
    assert query(target_dsn, "SELECT count(*), count(*) FILTER (WHERE note = 'changed') FROM items"
                 ) == [(8000, 2000)]

    # in a pipe: plain lines, no terminal codes; the same run with --json: nothing on stderr
    execute(source_dsn, "DELETE FROM items WHERE id > 7000")
    cli(workdir, "capture", "--until", "current", "--json")
    piped = cli(workdir, "replay", "--to", target_dsn, "--dry-run")
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr
    lines = piped.stderr.splitlines()
    assert re.fullmatch(r"replay: read the log: 1000 changes of 1000 changes \(100%\), "
                        r"[\d.]+[kM]? changes/s, done in \d\d:\d\d", lines[0]), lines
    assert "read 1000 changes in 1 transactions" in lines
    assert any(re.fullmatch(r"replay: stage: 1000 rows of 1000 rows \(100%\), .*done in \d\d:\d\d",
                            ln) for ln in lines), lines
    quiet = cli(workdir, "replay", "--to", target_dsn, "--dry-run", "--json")
    assert quiet.stderr == "" and '"status": "dry-run"' in quiet.stdout
