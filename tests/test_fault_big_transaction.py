"""One 1,000,000-row transaction: the capture daemon streams it into the log with peak RSS under
300 MB, and replay applies it onto the T0 copy exactly."""

from __future__ import annotations

import time

import pytest

from tests.helpers import NAN_AS_NULL, cli, cli_json, execute, query, spawn, wait_peak_rss_mb, write_config


@pytest.mark.slow  # about 110 s; still part of `make test`
def test_million_row_transaction_captured_in_bounded_memory_and_replayed(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE big (id integer PRIMARY KEY, v text, n numeric)",
            "INSERT INTO big VALUES (0, 'before', 0)")
    write_config(workdir, source_dsn, capture=NAN_AS_NULL)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, "INSERT INTO big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 1000000) g")
    t0 = time.monotonic()
    proc = spawn(workdir, "capture", "--until", "current")
    peak_mb = wait_peak_rss_mb(proc)  # VmHWM of the daemon itself, polled while it runs
    assert proc.returncode == 0, proc.stderr.read()
    capture_s = time.monotonic() - t0
    assert peak_mb < 300, f"capture daemon peak RSS {peak_mb:.0f} MB"
    assert cli_json(workdir, "status", "--offline")["tables"]["public.big"]["insert"] == 1_000_000
    cli(workdir, "replay", "--to", target_dsn, timeout=900)
    check = "SELECT count(*), sum(id), md5(string_agg(v || n::text, ',' ORDER BY id)) FROM big"
    assert query(target_dsn, check) == query(source_dsn, check)
    print(f"capture {capture_s:.1f} s, peak RSS {peak_mb:.0f} MB")
