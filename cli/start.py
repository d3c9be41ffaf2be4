"""`pgcarry start`: T0 — preflight, slot with an exported snapshot, test copy, masking, manifest."""

from __future__ import annotations

import argparse
import signal
import sys

from pgcarry.capture.t0 import start
from pgcarry.cli.common import add_common, load_config, log_for, print_json, warn
from pgcarry.cli.progress import for_output

NAME = "start"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="T0: create the slot with an exported snapshot and take the test copy")
    add_common(p, source=True)
    p.add_argument("--slot", help="replication slot name (overrides [source] slot)")
    p.add_argument("--copy-to", help="copy the captured schemas into this (empty) database")
    p.add_argument("--jobs", type=int, help="parallel pg_dump/pg_restore jobs (default: [copy] jobs)")
    p.add_argument("--set-replica-identity", action="store_true",
                   help="run ALTER TABLE ... REPLICA IDENTITY FULL for captured tables that lack it")
    p.add_argument("--snapshot-only", action="store_true",
                   help="print the snapshot name and hold it until stdin closes or SIGTERM/SIGINT")
    return p


def _hold(snapshot: str) -> None:
    print(f"snapshot {snapshot}", flush=True)
    print(
        f"hold: run `pg_dump --snapshot={snapshot} ...` now; press Enter (or close stdin, or send "
        "SIGTERM) once pg_dump has finished",
        file=sys.stderr, flush=True,
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """T0: create the slot with an exported snapshot and take the test copy."""
    cfg = load_config(args, {
        "source": {"dsn": args.source, "slot": args.slot},
        "copy": {"to": args.copy_to, "jobs": args.jobs},
    })
    if args.snapshot_only and cfg.copy_.to:
        from pgcarry.errors import ConfigError

        raise ConfigError("--snapshot-only and a copy target exclude each other")
    manifest = start(
        cfg, lambda: log_for(cfg, create=True),
        copy_to=None if args.snapshot_only else cfg.copy_.to,
        jobs=cfg.copy_.jobs,
        set_replica_identity=args.set_replica_identity,
        hold=_hold if args.snapshot_only else None,
        progress=for_output(args.json), warn=warn,
    )
    if args.json:
        print_json(manifest.model_dump(mode="json"))
    else:
        print(f"T0 {manifest.consistent_point}: slot {manifest.slot}, snapshot {manifest.snapshot}, "
              f"{len(manifest.tables)} tables captured")
        masked = sum(len(t.masked_columns) for t in manifest.tables.values())
        if manifest.copy_target:
            print(f"test copy: {manifest.copy_target} ({masked} masked columns)")
        print("next: run `pgcarry capture` (keep it running until the cutover)")
    return 0
