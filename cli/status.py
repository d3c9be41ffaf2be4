"""`pgcarry status`: counts per table and operation, slot state, lag, log size, daemon health."""

from __future__ import annotations

import argparse
import sys

from pgcarry.capture.status import status
from pgcarry.cli.common import add_common, load_config, log_for, print_json, print_table

NAME = "status"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="show what was captured, the slot's state and the daemon's health")
    add_common(p, source=True)
    p.add_argument("--offline", action="store_true", help="read only the log, do not contact the source")
    return p


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _storage(lg: dict[str, object]) -> str:
    text = f"{_human(lg['size_bytes'])} on disk"  # type: ignore[arg-type]
    if lg["bytes_per_change"] is not None:
        text += f", {lg['bytes_per_change']:.0f} B per change"
    if lg["compression_ratio"] is not None:
        text += f", {lg['compression_ratio']:.1f}x smaller than uncompressed"
    return text


def run(args: argparse.Namespace) -> int:
    """Show what was captured, the slot's state and the daemon's health."""
    cfg = load_config(args, {"source": {"dsn": args.source}})
    with log_for(cfg, readonly=True) as changelog:
        out = status(changelog, None if args.offline else cfg.source.dsn, cfg.source.slot)
    lost = bool(out.get("slot") and out["slot"].get("lost")) or bool(out.get("incomplete"))
    if args.json:
        print_json(out)
    else:
        rows = [[rel, c["insert"], c["update"], c["delete"], c["truncate"]] for rel, c in out["tables"].items()]
        print_table(["table", "insert", "update", "delete", "truncate"], rows)
        lg, s, d = out["log"], out.get("slot"), out["daemon"]
        print()
        print(f"transactions  {lg['transactions']}  (first {lg['first_commit_time'] or '-'}, "
              f"last {lg['last_commit_time'] or '-'}, last commit LSN {lg['last_commit_lsn'] or '-'})")
        print(f"log size      {_storage(lg)}")
        print(f"daemon        {'running, pid ' + str(d['pid']) if d['running'] else 'not running'}")
        if s and s.get("exists"):
            print(f"slot          {s['name']}: {'active' if s['active'] else 'inactive'}, "
                  f"wal_status {s['wal_status']}, confirmed_flush_lsn {s['confirmed_flush_lsn']}")
            print(f"capture lag   {_human(s['lag_bytes'])} behind {s['current_lsn']}; "
                  f"WAL held back {_human(s['wal_held_bytes'])}")
        elif s:
            print(f"slot          {s['name']}: does not exist")
    for w in out["warnings"]:
        print(f"pgcarry: WARNING: {w}", file=sys.stderr)
    return 3 if lost or out["damaged"] else 0
