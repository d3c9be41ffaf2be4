import os
from pathlib import Path

import pytest

from pgcarry.errors import ConfigError
from pgcarry.schemas.config import parse
from tests.helpers import cli


def test_defaults_and_env_expansion(monkeypatch):
    monkeypatch.setenv("PGCARRY_TEST_DSN", "host=db1 dbname=shop")
    cfg = parse({"source": {"dsn": "${PGCARRY_TEST_DSN}"}}, base=Path("/etc/pgcarry"))
    assert cfg.source.dsn == "host=db1 dbname=shop"
    assert cfg.source.slot == "pgcarry"
    assert cfg.log.path == Path("/etc/pgcarry/pgcarry-log.db")
    assert cfg.replay.insert_exists == "fail" and cfg.replay.delete_missing == "skip"
    assert cfg.capture.wants("public", "orders") and not cfg.capture.wants("audit", "x")


def test_each_problem_is_one_line():
    with pytest.raises(ConfigError) as e:
        parse({
            "source": {"dsn": "host=x", "slot": "Bad-Name", "colour": 1},
            "replay": {"insert-exists": "maybe"},
            "copy": {"jobs": "two"},
        }, origin="p.toml")
    lines = str(e.value).splitlines()
    assert lines == [
        "p.toml: source.slot: slot names use lower-case letters, digits and _ (at most 63)",
        "p.toml: source.colour: unknown key",
        "p.toml: copy.jobs: Input should be a valid integer, unable to parse string as an integer",
        "p.toml: replay.insert-exists: Input should be 'fail', 'source-wins' or 'target-wins'",
    ]


def test_missing_env_var_is_named(monkeypatch):
    monkeypatch.delenv("NOPE_DSN", raising=False)
    with pytest.raises(ConfigError, match="source.dsn: environment variable NOPE_DSN is not set"):
        parse({"source": {"dsn": "${NOPE_DSN}"}})


def test_mask_rule_shapes():
    cfg = parse({"source": {"dsn": "host=x"}, "mask": [
        {"table": "public.p", "column": "card"},
        {"table": "public.p", "column": "email", "regex": "^(.{3}).*(@.*)", "replace": "\\1***\\2"},
    ]})
    assert cfg.mask[0].value == "MASKED" and cfg.mask[1].value is None
    with pytest.raises(ConfigError, match="regex"):
        parse({"source": {"dsn": "host=x"}, "mask": [{"table": "t", "column": "c", "replace": "y"}]})


def test_cli_bad_file_exit_2_without_traceback(tmp_path):
    (tmp_path / "pgcarry.toml").write_text("[source]\ndsn = 1\nslot = \"s\"\n[log]\nbackend = \"floppy\"\n")
    proc = cli(tmp_path, "status", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "pgcarry: error: pgcarry.toml: source.dsn: Input should be a valid string",
        "pgcarry: error: pgcarry.toml: log.backend: Input should be 'sqlite' or 'kafka'",
    ]
    (tmp_path / "pgcarry.toml").write_text("[source\n")
    proc = cli(tmp_path, "status", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("pgcarry: error: pgcarry.toml: not valid TOML")
    os.remove(tmp_path / "pgcarry.toml")
    proc = cli(tmp_path, "status", check=False)
    assert proc.returncode == 2 and "no such config file" in proc.stderr
