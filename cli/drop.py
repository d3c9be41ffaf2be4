"""`pgcarry drop`: drop the replication slot (the log stays)."""

from __future__ import annotations

import argparse
import time

import psycopg

from pgcarry.changelog.integrity import SLOT_DROPPED
from pgcarry.cli.common import add_common, load_config, log_for, print_json
from pgcarry.errors import LogError, SlotError

NAME = "drop"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="drop the replication slot (the change log is kept)")
    add_common(p, source=True)
    p.add_argument("--yes", action="store_true", help="really drop it")
    return p


def _remember(cfg, slot: str) -> None:  # type: ignore[no-untyped-def]
    """Record in the log that the user dropped the slot on purpose (not a lost slot)."""
    try:
        with log_for(cfg) as log:
            log.set_state(SLOT_DROPPED, {"slot": slot, "at": time.time()})
    except LogError:
        pass  # no log here: nothing to record


def run(args: argparse.Namespace) -> int:
    """Drop the replication slot (the change log is kept)."""
    cfg = load_config(args, {"source": {"dsn": args.source}})
    slot = cfg.source.slot
    if not args.yes:
        print(f"would drop replication slot {slot!r}: the source stops holding WAL for it, and changes "
              "made after its confirmed position are no longer captured. The change log is kept. "
              "Run again with --yes to do it.")
        return 0
    with psycopg.connect(cfg.source.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        if row is None:
            raise SlotError(f"replication slot {slot!r} does not exist")
        if row[0] is not None:
            raise SlotError(f"replication slot {slot!r} is in use by pid {row[0]}",
                            hint="stop `pgcarry capture` first")
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    _remember(cfg, slot)
    if args.json:
        print_json({"dropped": slot})
    else:
        print(f"dropped replication slot {slot!r}")
    return 0
