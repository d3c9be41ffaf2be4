"""`pgcarry status`: counts per table and operation, slot state, lag, log size, daemon health."""

from __future__ import annotations

import argparse

from pgcarry.capture.forecast import human_bytes, human_seconds
from pgcarry.capture.status import status
from pgcarry.cli.common import add_common, load_config, log_for, print_json, print_table, warn

NAME = "status"
EXIT_SLOT_AT_RISK = 6  # the slot's estimated time to invalidation is below the warning threshold
EXIT_NOT_REPLAYABLE = 7  # capture stopped at a change, or a table the log cannot replay exactly


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="show what was captured, the slot's state and the daemon's health")
    add_common(p, source=True)
    p.add_argument("--offline", action="store_true", help="read only the log, do not contact the source")
    p.add_argument("--slot-warning-hours", type=float, metavar="H",
                   help="exit 6 when the slot would be invalidated within H hours "
                        "(default: [capture] slot-warning-hours, 6)")
    return p


def _human(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)


def _forecast_line(f: dict) -> str:  # type: ignore[type-arg]
    if f["safe_wal_bytes"] is None:
        return "no limit (max_slot_wal_keep_size = -1)"
    rate = f.get("wal_rate_bytes_per_second")
    left = f["invalidation_seconds"]
    return (f"safe_wal_size {_human(f['safe_wal_bytes'])}; WAL rate "
            + (f"{_human(rate)}/s ({f['rate_source']})" if rate is not None else "unknown")
            + "; invalidated in " + ("-" if left is None else human_seconds(left))
            + (" -- AT RISK" if f["at_risk"] else ""))


def _storage(lg: dict[str, object]) -> str:
    text = f"{_human(lg['size_bytes'])} on disk"  # type: ignore[arg-type]
    if lg["bytes_per_change"] is not None:
        text += f", {lg['bytes_per_change']:.0f} B per change"
    if lg["compression_ratio"] is not None:
        text += f", {lg['compression_ratio']:.1f}x smaller than uncompressed"
    return text


def run(args: argparse.Namespace) -> int:
    """Show what was captured, the slot's state and the daemon's health."""
    cfg = load_config(args, {"source": {"dsn": args.source},
                             "capture": {"slot-warning-hours": args.slot_warning_hours}})
    with log_for(cfg, readonly=True) as changelog:
        out = status(changelog, None if args.offline else cfg.source.dsn, cfg.source.slot,
                     cfg.capture.slot_warning_hours)
    lost = bool(out.get("slot") and out["slot"].get("lost")) or bool(out.get("incomplete"))
    at_risk = bool(((out.get("slot") or {}).get("forecast") or {}).get("at_risk"))
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
        running = f"running, pid {d['pid']} on {d['host']}" if d["running"] else "not running"
        print(f"daemon        {running}")
        if s and s.get("exists"):
            print(f"slot          {s['name']}: {'active' if s['active'] else 'inactive'}, "
                  f"wal_status {s['wal_status']}, confirmed_flush_lsn {s['confirmed_flush_lsn']}")
            print(f"capture lag   {_human(s['lag_bytes'])} behind {s['current_lsn']}; "
                  f"WAL held back {_human(s['wal_held_bytes'])}")
            if "forecast" in s:
                print(f"slot safety   {_forecast_line(s['forecast'])}")
        elif s:
            print(f"slot          {s['name']}: does not exist")
        for leaf in out["partitions_learned"].values():
            print(f"partition     {leaf['schema']}.{leaf['name']} of {'.'.join(leaf['root'])}: captured "
                  f"since {leaf['first_lsn']} (not there at T0)")
    for w in out["warnings"]:
        warn(w)
    if lost or out["damaged"]:
        return 3
    return EXIT_NOT_REPLAYABLE if out["unsafe"] or out["capture_stopped"] else EXIT_SLOT_AT_RISK if at_risk else 0
