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
from pgcarry.errors import PgcarryError
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcarry",
        description="Carry every production write across a test copy -> production overwrite.",
    )
    parser.add_argument("--version", action="version", version=f"pgcarry {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for mod in _load_verbs():
        p = mod.add_parser(sub)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
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
