"""The `pgcarry` command: one sub-command per verb, each in its own module under cli/.

A module in VERBS provides ``NAME``, ``add_parser(subparsers)`` and ``run(args) -> int``; the
first line of its ``run`` docstring is the verb's help text.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from pgcarry import __version__
from pgcarry.cli.common import CONFIG_ENV
from pgcarry.errors import PgcarryError
from pgcarry.schemas.config import DEFAULT_CONFIG
from pgcarry.schemas.dsn import redact

VERBS = ["init", "start", "capture", "status", "drop", "replay", "verify", "cutover", "rehearse", "demo"]


def _load_verbs() -> list:  # type: ignore[type-arg]
    mods = []
    for name in VERBS:
        try:
            mods.append(importlib.import_module(f"pgcarry.cli.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"pgcarry.cli.{name}":
                raise
    return mods


def _add_globals(p: argparse.ArgumentParser) -> None:
    """The flags every verb takes before or after its name. Their defaults are SUPPRESS so that a
    flag given after the verb wins over one given before it, and an absent one changes nothing;
    an absent --config falls back to $PGCARRY_CONFIG, then pgcarry.toml (cli/common.config_path)."""
    if "--config" not in p._option_string_actions:
        p.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="FILE",
                       help=f"config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})")
    p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log progress details")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcarry",
        description="Carry every production write across a test copy -> production overwrite.",
    )
    parser.add_argument("--version", action="version", version=f"pgcarry {__version__}")
    _add_globals(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for mod in _load_verbs():
        p = mod.add_parser(sub)
        _add_globals(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.traceback = getattr(args, "traceback", False)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except PgcarryError as e:
        if args.traceback:
            raise
        for line in redact(str(e)).splitlines():
            print(f"pgcarry: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("pgcarry: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence keeps secrets out of output
        if args.traceback or os.environ.get("PGCARRY_TRACEBACK"):
            raise
        print(f"pgcarry: error: {type(e).__name__}: {redact(str(e))}", file=sys.stderr)
        print("pgcarry: run again with --traceback for details", file=sys.stderr)
        return 1
