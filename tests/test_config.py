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


def _masks(*rules, masking=None):
    data = {"source": {"dsn": "host=x"}, "mask": list(rules)}
    if masking is not None:
        data["masking"] = masking
    return parse(data, origin="p.toml")


def test_mask_kinds_take_their_own_options_one_line_per_problem(monkeypatch):
    monkeypatch.setenv("PGCARRY_MASK_SALT", "s" * 16)
    cfg = _masks({"table": "p", "column": "a", "kind": "hash", "length": 20, "prefix": "h-"},
                 {"table": "p", "column": "b", "kind": "email", "keep-domain": True},
                 {"table": "p", "column": "c", "regex": "[0-9]", "replace": "0", "flags": "g", "unique": True},
                 {"table": "s.p", "column": "d", "kind": "null"})
    assert [(m.relation, m.kind, m.options) for m in cfg.mask] == [
        ("public.p", "hash", {"prefix": "h-", "suffix": "", "length": 20}),
        ("public.p", "email", {"length": 16, "domain": "example.test", "keep-domain": True}),
        ("public.p", "regex", {"regex": "[0-9]", "replace": "0", "flags": "g", "unique": True, "length": 12}),
        ("s.p", "null", {})]
    with pytest.raises(ConfigError) as e:
        _masks({"table": "p", "column": "a", "kind": "hash", "regex": "x", "domain": "bad domain"},
               {"table": "p", "column": "b", "kind": "regex", "length": 8},
               {"table": "p", "column": "c", "prefix": "x"},
               {"table": "p", "column": "d", "kind": "email", "domain": "x.test", "keep-domain": True},
               {"table": "p", "column": "e", "kind": "sha1"},
               {"table": "p", "column": "f", "regex": "x", "replace": "y", "flags": "gx"})
    assert str(e.value).splitlines() == [
        'p.toml: mask.0: `regex` does not apply to kind "hash" (it takes: `prefix`, `suffix`, `length`)',
        'p.toml: mask.0: `domain` does not apply to kind "hash" (it takes: `prefix`, `suffix`, `length`)',
        "p.toml: mask.0: `domain` must be a domain name such as example.test",
        'p.toml: mask.1: kind "regex" needs `regex`',
        'p.toml: mask.1: kind "regex" needs `replace`',
        "p.toml: mask.1: `length` is the digest `unique = true` appends: it needs `unique = true`",
        'p.toml: mask.2: `prefix` does not apply to kind "value" (it takes: `value`)',
        "p.toml: mask.3: give either `domain` or `keep-domain = true`, not both",
        "p.toml: mask.4.kind: Input should be 'value', 'null', 'regex', 'hash' or 'email'",
        "p.toml: mask.5.flags: String should match pattern '^[gi]*$'",
    ]


def test_salt_is_required_by_salted_rules_and_never_shown(monkeypatch):
    monkeypatch.delenv("PGCARRY_MASK_SALT", raising=False)
    rule = {"table": "p", "column": "email", "kind": "email"}
    with pytest.raises(ConfigError) as e:
        _masks(rule, {"table": "p", "column": "email", "value": "x"})
    assert str(e.value).splitlines() == [
        "p.toml: mask.1: public.p.email has a rule already (mask.0)",
        "p.toml: masking.salt: mask.0 (public.p.email, kind email) needs a salt: export "
        "PGCARRY_MASK_SALT=\"$(openssl rand -hex 16)\" (keep it for the cutover) or set [masking] "
        "salt = \"${VAR}\""]
    assert _masks({"table": "p", "column": "c"}, {"table": "p", "column": "d", "regex": "a", "replace": "b"}
                  ).salt is None  # unsalted kinds need none
    with pytest.raises(ConfigError, match="masking.salt: use at least 16 characters") as e:
        _masks(rule, masking={"salt": "Short-Secret"})
    assert "Short-Secret" not in str(e.value)
    with pytest.raises(ConfigError, match="masking.salt: environment variable NOPE_SALT is not set"):
        _masks(rule, masking={"salt": "${NOPE_SALT}"})
    monkeypatch.setenv("MY_SALT", "Very-Secret-Salt-42")
    cfg = _masks(rule, masking={"salt": "${MY_SALT}"})
    assert cfg.salt == "Very-Secret-Salt-42"
    shown = repr(cfg) + str(cfg.model_dump(mode="json")) + cfg.model_dump_json()
    assert "Very-Secret" not in shown and "**********" in shown
    monkeypatch.setenv("PGCARRY_MASK_SALT", "From-The-Environment-1")
    assert _masks(rule).salt == "From-The-Environment-1"
