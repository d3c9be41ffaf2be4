"""-c/--config, --traceback and -v/--verbose before and after every verb, $PGCARRY_CONFIG, and
their precedence: flag after the verb > flag before it > environment > pgcarry.toml."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pgcarry.cli.common import config_path
from pgcarry.cli.main import VERBS, build_parser, main
from pgcarry.errors import ConfigError
from tests.helpers import cli, write_config

REQUIRED = {"init": ["--source", "host=x"], "cutover": ["--from", "host=x"],
            "rehearse": ["--from", "host=x"]}
FLAGS = {"-c": ["-c", "given.toml"], "--config": ["--config", "given.toml"],
         "--traceback": ["--traceback"], "-v": ["-v"], "--verbose": ["--verbose"]}
EXPECT = {"-c": ("config", "given.toml"), "--config": ("config", "given.toml"),
          "--traceback": ("traceback", True), "-v": ("verbose", True), "--verbose": ("verbose", True)}
READS_CONFIG = [v for v in VERBS if v not in ("init", "demo")]


def _argv(verb: str, flag: str, where: str) -> list[str]:
    rest = [verb, *REQUIRED.get(verb, [])]
    return FLAGS[flag] + rest if where == "before" else rest + FLAGS[flag]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("flag", list(FLAGS))
@pytest.mark.parametrize("verb", VERBS)
def test_every_flag_in_both_positions(verb, flag, where):
    args = build_parser().parse_args(_argv(verb, flag, where))
    name, value = EXPECT[flag]
    assert args.verb == verb and getattr(args, name) == value
    others = {"config", "traceback", "verbose"} - {name}
    assert not any(getattr(args, o, None) for o in others)  # an absent flag is absent


def _resolved(argv: list[str]) -> Path:
    return config_path(build_parser().parse_args(argv))


def test_precedence_after_before_env_default(tmp_path, monkeypatch):
    env_file = tmp_path / "env.toml"
    env_file.write_text("")
    monkeypatch.delenv("PGCARRY_CONFIG", raising=False)
    assert _resolved(["status"]) == Path("pgcarry.toml")
    monkeypatch.setenv("PGCARRY_CONFIG", str(env_file))
    assert _resolved(["status"]) == env_file
    assert _resolved(["-c", "before.toml", "status"]) == Path("before.toml")
    assert _resolved(["--config", "before.toml", "status", "-c", "after.toml"]) == Path("after.toml")
    assert _resolved(["status", "--config", "after.toml"]) == Path("after.toml")


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("verb", READS_CONFIG)
def test_missing_config_is_one_line_in_both_positions(verb, where, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGCARRY_CONFIG", raising=False)
    assert main(_argv(verb, "--config", where)) == 2
    assert capsys.readouterr().err.splitlines() == [
        "pgcarry: error: given.toml: no such config file (hint: run `pgcarry init --source DSN` or "
        "pass --config)"]


@pytest.mark.parametrize("verb", READS_CONFIG)
def test_missing_file_named_by_the_environment(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pgcarry.toml").write_text("[source]\ndsn = 'host=x'\n")  # not used instead
    monkeypatch.setenv("PGCARRY_CONFIG", "nowhere.toml")
    assert main([verb, *REQUIRED.get(verb, [])]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "pgcarry: error: nowhere.toml: no such config file (named by $PGCARRY_CONFIG) (hint: unset "
        "PGCARRY_CONFIG or pass --config FILE)"]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("verb", READS_CONFIG)
def test_traceback_in_both_positions(verb, where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGCARRY_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="pgcarry.toml: no such config file"):
        main(_argv(verb, "--traceback", where))


def test_init_writes_where_the_flags_or_the_environment_say(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("before.toml", "after.toml", "env.toml"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("PGCARRY_CONFIG", "env.toml")
    for argv, name in ((["-c", "before.toml", "init", "--source", "x"], "before.toml"),
                       (["init", "--source", "x", "--config", "after.toml"], "after.toml"),
                       (["init", "--source", "x"], "env.toml")):
        assert main(argv) == 2
        assert capsys.readouterr().err == (f"pgcarry: error: {name} exists (hint: pass --force to "
                                           "overwrite it)\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_real_cli_verbose_and_config_in_both_positions(where, tmp_path):
    """The installed command: -v logs which config file was used, and from where."""
    write_config(tmp_path, "host=127.0.0.1 port=1 dbname=x")
    (tmp_path / "pgcarry.toml").rename(tmp_path / "other.toml")
    argv = ["-v", "-c", "other.toml", "status", "--offline"] if where == "before" else \
        ["status", "--offline", "-v", "-c", "other.toml"]
    proc = cli(tmp_path, *argv, check=False)
    assert proc.returncode == 3  # the config was read; the log does not exist yet
    assert "INFO pgcarry.cli.common: config file other.toml (from --config)" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("pgcarry: error: change log ")
    quiet = cli(tmp_path, "status", "--offline", "-c", "other.toml", check=False)
    assert "INFO" not in quiet.stderr and len(quiet.stderr.splitlines()) == 1


def test_real_cli_env_config_missing_is_one_line(tmp_path):
    proc = cli(tmp_path, "status", check=False, env={"PGCARRY_CONFIG": str(tmp_path / "gone.toml")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (f"pgcarry: error: {tmp_path / 'gone.toml'}: no such config file (named by "
                           "$PGCARRY_CONFIG) (hint: unset PGCARRY_CONFIG or pass --config FILE)\n")


def test_a_namespace_without_flags_still_loads(tmp_path, monkeypatch):
    """Code (the Kafka tests, scripts) may build the namespace itself."""
    monkeypatch.delenv("PGCARRY_CONFIG", raising=False)
    assert config_path(argparse.Namespace()) == Path("pgcarry.toml")
