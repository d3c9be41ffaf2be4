"""`pgcarry replay`: apply the captured changes to the overwritten database, in one transaction."""

from __future__ import annotations

import argparse

from pgcarry.changelog import integrity
from pgcarry.cli.common import add_common, load_config, log_for, print_json, print_table
from pgcarry.cli.progress import for_output
from pgcarry.errors import ConfigError
from pgcarry.replay import replay, sequences
from pgcarry.replay.report import render

NAME = "replay"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="apply the captured changes to the target in foreign-key order")
    add_common(p)
    p.add_argument("--to", help="target DSN (the overwritten database); default: [copy] to")
    p.add_argument("--mode", choices=["net", "txn"], help="net (default): fold and apply set-wise; "
                   "txn: transaction by transaction in commit order")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (counts, order, conflicts, schema drift); write nothing")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="experts: replay a log whose slot was lost (changes after it are missing)")
    return p


def run(args: argparse.Namespace) -> int:
    """Apply the captured changes to the target in foreign-key order."""
    cfg = load_config(args, {"replay": {"mode": args.mode}})
    to = args.to or cfg.copy_.to
    if not to:
        raise ConfigError("no target database", hint="pass --to DSN")
    with log_for(cfg, readonly=True) as log:
        integrity.check(cfg, log, allow_incomplete=args.allow_incomplete)
        rep = replay(cfg, log, to, dry_run=args.dry_run, allow_incomplete=args.allow_incomplete,
                     progress=for_output(args.json), production=sequences.from_source(cfg.source.dsn, to))
    if args.json:
        print_json(rep.as_dict())
    else:
        render(rep, print_table)
    return 0
