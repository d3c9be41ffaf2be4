"""`pgcarry rehearse`: the cutover's overwrite, replay, unmask and verify against a scratch database;
production, the slot and the log stay untouched. Exit 0 only when the rehearsal verified."""

from __future__ import annotations

import argparse

from pgcarry.changelog import integrity
from pgcarry.cli.common import (add_common, add_report, load_config, log_for, print_json, print_table,
                                write_report)
from pgcarry.cli.progress import for_output
from pgcarry.errors import VerifyError

NAME = "rehearse"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="rehearse the cutover against a scratch database")
    add_common(p)
    p.add_argument("--from", dest="test", required=True, help="the test database's DSN")
    p.add_argument("--scratch", help="use this (empty) database instead of creating one on production")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="experts: rehearse with a log whose slot was lost")
    p.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
    add_report(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Rehearse the cutover against a scratch database; production and the slot stay untouched."""
    from pgcarry.cutover.rehearse import rehearse

    cfg = load_config(args)
    with log_for(cfg, readonly=True) as log:
        integrity.check(cfg, log, allow_incomplete=args.allow_incomplete)
        shown = for_output(args.json)
        rep = rehearse(cfg, log, args.test, scratch=args.scratch, keep=args.keep, say=shown.note,
                       progress=shown)
    if args.json:
        print_json(rep)
    else:
        print_table(["phase", "seconds"], [[p["phase"], p["seconds"]] for p in rep["phases"]])
        print(f"\nexpected downtime: about {rep['expected_downtime_seconds']} s plus fence and drain")
        print(f"{len(rep['conflicts'])} conflict(s)")
        for c in rep["conflicts"][:50]:
            print(f"  {c}")
        for f in rep["failed"]:
            print(f"verify FAILED: {f}")
        print(f"scratch: {rep['scratch']} ({'kept' if rep['kept'] else 'dropped'})")
    write_report(args, "rehearse", rep, shown.note)
    return 0 if rep["ok"] else VerifyError.exit_code
