"""`pgcarry capture`: the daemon that streams the slot into the change log."""

from __future__ import annotations

import argparse
import signal
import threading
import time

from pgcarry.capture.daemon import Capture, slot_position
from pgcarry.cli.common import add_common, load_config, log_for, print_json
from pgcarry.cli.progress import for_output
from pgcarry.changelog.integrity import NEW_T0, note_slot
from pgcarry.errors import ChangeTooLargeError, ConfigError, LogError, LogIncompleteError, SlotError
from pgcarry.schemas.lsn import Lsn

NAME = "capture"
METRICS_POLL = 5.0  # seconds between two looks at the slot for the metrics
CAPTURE_ERROR = "capture_error"  # a fatal capture error, for `status`


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="stream production changes into the change log (the daemon)")
    add_common(p, source=True)
    p.add_argument("--until", help="'current' (the source's WAL position now) or an LSN X/X: "
                   "capture up to it, make it durable and exit")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT")
    return p


def _target(arg: str | None, dsn: str, slot: str) -> Lsn | None:
    if arg is None:
        return None
    if arg == "current":
        return slot_position(dsn, slot)[1]
    try:
        return Lsn.parse(arg)
    except ValueError as e:
        raise ConfigError(f"--until: {e}") from None


def _poll_slot(metrics, dsn: str, slot: str, wal, stopped: threading.Event) -> None:  # type: ignore[no-untyped-def]
    from pgcarry.capture.forecast import estimate
    from pgcarry.capture.status import slot_state

    while True:
        try:
            s = slot_state(dsn, slot)
            metrics.slot(s.get("lag_bytes"), s.get("wal_held_bytes"))
            if s["exists"]:
                measured = wal.rate(time.time(), Lsn.parse(s["current_lsn"]).value)
                rate = measured[0] if measured else None
                metrics.forecast(s["safe_wal_bytes"], rate, estimate(s["safe_wal_bytes"], rate))
        except Exception:  # noqa: BLE001 - metrics must never stop capture
            pass
        if stopped.wait(METRICS_POLL):
            return


def run(args: argparse.Namespace) -> int:
    """Stream production changes into the change log (the daemon)."""
    cfg = load_config(args, {"source": {"dsn": args.source}, "capture": {"metrics-port": args.metrics_port}})
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with log_for(cfg) as changelog, changelog.lock():
        manifest = changelog.read_manifest()
        if manifest is None:
            raise LogError("the change log has no manifest", hint="run `pgcarry start` first")
        if manifest.slot != cfg.source.slot:
            raise LogError(f"the log belongs to slot {manifest.slot!r}, not {cfg.source.slot!r}")
        until = _target(args.until, cfg.source.dsn, cfg.source.slot)
        metrics = None
        if cfg.capture.metrics_port:
            from pgcarry.capture.metrics import Metrics

            metrics = Metrics(cfg.capture.metrics_port)
        cap = Capture(cfg.source.dsn, cfg.source.slot, changelog, manifest, metrics,
                      for_output(args.json))
        if metrics:
            threading.Thread(target=_poll_slot, daemon=True, args=(
                metrics, cfg.source.dsn, cfg.source.slot, cap.wal, stopping)).start()
        t0 = time.monotonic()
        if changelog.get_state(CAPTURE_ERROR):
            changelog.set_state(CAPTURE_ERROR, None)  # a new attempt: status shows the next one
        try:
            prog = cap.run(until=until, stop=stopping.is_set)
        except ChangeTooLargeError as e:  # fatal: the same change comes again after a restart
            changelog.set_state(CAPTURE_ERROR, {"error": e.message, **{k: str(v) for k, v in e.context.items()},
                                                "at": time.time()})
            raise
        except SlotError as e:
            lost = note_slot(changelog, cfg.source.dsn, cfg.source.slot)
            if lost is None:
                raise
            raise LogIncompleteError(
                f"replication slot {cfg.source.slot!r} was lost ({lost['reason']}); the change log is "
                f"complete only up to {lost.get('last_lsn') or 'its last position'}", hint=NEW_T0) from e
        changelog.set_state("capture", {"confirmed": str(prog.confirmed) if prog.confirmed else None,
                                        "stopped_at": time.time()})
    out = {
        "transactions": prog.transactions, "changes": prog.changes,
        "confirmed_lsn": str(prog.confirmed) if prog.confirmed else None,
        "until": str(until) if until else None, "seconds": round(time.monotonic() - t0, 3),
    }
    if args.json:
        print_json(out)
    else:
        print(f"captured {prog.transactions} transactions ({prog.changes} changes); "
              f"confirmed {out['confirmed_lsn']}" + (f" (until {until})" if until else ""))
    return 0
