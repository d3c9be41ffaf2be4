"""`pgcarry verify`: check that the replay landed; exit 0 only when every check holds."""

from __future__ import annotations

import argparse

from pgcarry.cli.common import add_common, load_config, log_for, print_json, print_table
from pgcarry.errors import ConfigError, VerifyError
from pgcarry.replay.verify import verify

NAME = "verify"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="check counts, final images, foreign keys, sequences, assertions")
    add_common(p)
    p.add_argument("--to", help="target DSN (the replayed database); default: [copy] to")
    return p


def run(args: argparse.Namespace) -> int:
    """Check counts, final images, foreign keys, sequences and assertions after a replay."""
    cfg = load_config(args)
    to = args.to or cfg.copy_.to
    if not to:
        raise ConfigError("no target database", hint="pass --to DSN")
    with log_for(cfg, readonly=True) as log:
        checks = verify(cfg, log, to)
    failed = [c for c in checks if not c.ok]
    if args.json:
        print_json({"ok": not failed, "checks": [c.__dict__ for c in checks]})
    else:
        print_table(["check", "table", "result", "detail"],
                    [[c.name, c.table, "ok" if c.ok else "FAIL", c.detail] for c in checks])
        print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed"
              + (f"; failed: {', '.join(sorted({f'{c.name} {c.table}' for c in failed}))}" if failed else ""))
    return VerifyError.exit_code if failed else 0
