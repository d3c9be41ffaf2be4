"""The `[capture] tables`/`exclude` pattern language (schemas/patterns.py): globs, quoted exact
names, and one-line errors at config load."""

from __future__ import annotations

import pytest

from pgcarry.errors import ConfigError
from pgcarry.schemas.config import parse
from pgcarry.schemas.patterns import exact, parse as pattern


@pytest.mark.parametrize("text, schema, table, hit", [
    ("public.*", "public", "orders", True),
    ("public.*", "public", "a.b", True),
    ("public.*", "Public", "orders", False),  # case-sensitive, as before
    ("public.order?", "public", "orders", True),
    ("public.[ab]", "public", "a", False),  # '[' is literal, not a class
    ("public.[ab]", "public", "[ab]", True),
    ('"*".t', "*", "t", True),
    ('"*".t', "public", "t", False),
    ('"my.schema"."odd*name"', "my.schema", "odd*name", True),
    ('"my.schema"."odd*name"', "my.schema", "oddXname", False),
    ('"a""b".*', 'a"b', "x", True),
    ('"S p"*.t', "S pace", "t", True),  # quoted and glob stretches mix
    ("스키마.*", "스키마", "x", True),
])
def test_pattern_matches(text, schema, table, hit):
    assert pattern(text).matches(schema, table) is hit


@pytest.mark.parametrize("schema, table", [("*", "?"), ('a"b', "x.y"), ("b\\s", "[t]"), ("Up Per", "테이블")])
def test_exact_matches_only_itself(schema, table):
    p = pattern(exact(schema, table))
    assert p.matches(schema, table)
    assert not p.matches(schema + "x", table) and not p.matches(schema, table + "x")


@pytest.mark.parametrize("bad, why", [
    ("orders", "expected \"schema.table\""), ('"public.orders', "not closed"),
    ("a.b.c", "more than one unquoted dot"), ('"".t', "empty quoted name"), (".t", "expected"),
])
def test_bad_patterns_are_one_line_config_errors(bad, why):
    with pytest.raises(ConfigError) as e:
        parse({"source": {"dsn": "host=x"}, "capture": {"exclude": [bad]}}, origin="p.toml")
    assert len(str(e.value).splitlines()) == 1
    assert str(e.value).startswith("p.toml: capture.exclude: ") and why in str(e.value)


def test_exclude_wins_and_default_is_public():
    cfg = parse({"source": {"dsn": "host=x"}, "capture": {"exclude": ['public."se*ssions"']}})
    assert cfg.capture.wants("public", "orders")
    assert not cfg.capture.wants("public", "se*ssions") and cfg.capture.wants("public", "sessions")
