"""Bad configs: unknown keys, wrong types, bad DSNs and impossible policies are each one line on
stderr with exit 2 and no traceback; random documents never raise anything but ConfigError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgcarry.errors import ConfigError
from pgcarry.schemas.config import parse
from tests.helpers import cli, execute, query, write_config

CASES = [
    ('[source]\ndsn = "host=x"\ncolor = 1\n', "pgcarry.toml: source.color: unknown key"),
    ('[source]\ndsn = "host=x"\n[wal]\nkeep = 1\n', "pgcarry.toml: wal: unknown key"),
    ('[source]\ndsn = ["host=x"]\n', "pgcarry.toml: source.dsn: Input should be a valid string"),
    ('[source]\ndsn = "host=x"\n[copy]\njobs = 0\n',
     "pgcarry.toml: copy.jobs: Input should be greater than or equal to 1"),
    ('[source]\ndsn = "host=x"\n[replay]\nmode = 3\n', "pgcarry.toml: replay.mode: Input should be 'net' or 'txn'"),
    ('[source]\ndsn = "garbage"\n', 'pgcarry.toml: source.dsn: not a libpq connection string or URI: '
     'missing "=" after "garbage" in connection info string'),
    ('[source]\ndsn = "host=x port=abc password=hunter2"\n',
     "pgcarry.toml: source.dsn: port must be a number from 1 to 65535"),
    ('[source]\ndsn = "postgresql://u:hunter2@h:70000/db"\n',
     "pgcarry.toml: source.dsn: port must be a number from 1 to 65535"),
    ('[source]\ndsn = "host=\'open password=hunter2"\n', "pgcarry.toml: source.dsn: not a libpq connection "
     "string or URI: unterminated quoted string in connection info string"),
    ('[source]\ndsn = "host=x"\n[replay.tables."public.t".columns]\nn = "add"\n',
     "pgcarry.toml: replay.tables.public.t.columns.n: Input should be 'source-wins', 'target-wins' or 'delta'"),
]


@pytest.mark.parametrize("text,line", CASES)
def test_bad_config_is_one_line_exit_2(tmp_path, text, line):
    (tmp_path / "pgcarry.toml").write_text(text)
    proc = cli(tmp_path, "status", "--offline", check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"pgcarry: error: {line}"]
    assert "hunter2" not in proc.stderr


_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False))
_keys = st.sampled_from(["source", "dsn", "slot", "capture", "tables", "log", "backend", "path", "replay",
                         "mode", "column", "insert-exists", "copy", "jobs", "mask", "verify", "x"])
_doc = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _doc, max_size=5))
def test_random_documents_raise_only_config_errors(doc):
    try:
        parse(doc)
    except ConfigError as e:
        assert all(line.startswith("pgcarry.toml: ") for line in str(e).splitlines())


def test_impossible_policies_are_refused_before_replay(source_dsn, target_dsn, workdir):
    execute(source_dsn, "CREATE TABLE p (id int PRIMARY KEY, title text, stock int)")
    write_config(workdir, source_dsn)
    cli(workdir, "start", "--copy-to", target_dsn, "--set-replica-identity")
    execute(source_dsn, "INSERT INTO p VALUES (1, 'a', 5)")
    cli(workdir, "capture", "--until", "current")
    bad = ('[replay.tables."public.p".columns]\ntitle = "delta"\nstok = "delta"\n'
           '[replay.tables."public.q"]\ninsert-exists = "source-wins"\n')
    write_config(workdir, source_dsn, extra=bad)
    for verb in (["replay", "--to", target_dsn], ["rehearse", "--from", target_dsn],
                 ["cutover", "--from", target_dsn, "--dry-run"]):
        proc = cli(workdir, *verb, check=False)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [
            'pgcarry: error: config: replay.tables."public.p".columns: public.p has no column \'stok\'',
            'pgcarry: error: config: replay.tables."public.p".columns.title: delta needs a number, '
            'but title is text',
            'pgcarry: error: config: replay.tables."public.q": no captured table public.q (captured: public.p)',
        ]
    assert query(target_dsn, "SELECT count(*) FROM p") == [(0,)]
