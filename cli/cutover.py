"""`pgcarry cutover`: fence, drain, back up, drop the slot, overwrite production with the test
database, replay, unmask, verify, unfence — one command, resumable after any failure."""

from __future__ import annotations

import argparse

from pgcarry.changelog import integrity
from pgcarry.cli.common import (add_common, add_report, load_config, log_for, print_json, print_table,
                                write_report)
from pgcarry.cli.progress import for_output
from pgcarry.errors import ConfigError, LogError, VerifyError
from pgcarry.replay.report import conflict_line

NAME = "cutover"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="overwrite production with the test database and replay the log")
    add_common(p)
    p.add_argument("--from", dest="test", required=True, help="the test database's DSN")
    p.add_argument("--fence", choices=["read-only", "none"], default="read-only",
                   help="read-only (default): default_transaction_read_only for every login role; "
                        "none: writes are fenced already")
    p.add_argument("--fence-cmd", help="shell command that fences writes (e.g. a maintenance flag); "
                   "implies the fence mode `cmd`")
    p.add_argument("--unfence-cmd", help="shell command run after verify passed, to lift the fence")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="experts: cut over with a log whose slot was lost (changes after it are lost)")
    p.add_argument("--yes", action="store_true", help="really do it (the overwrite is destructive)")
    p.add_argument("--dry-run", action="store_true", help="print the phases and the replay plan")
    add_report(p)
    return p


def _render(rep: dict) -> None:  # type: ignore[type-arg]
    print_table(["phase", "status", "seconds"], [[p["phase"], p["status"], p["seconds"]]
                                                  for p in rep["phases"]])
    replayed = next((p["detail"] for p in rep["phases"] if p["phase"] == "replay"), None) or {}
    for c in replayed.get("conflicts") or []:
        print(f"conflict: {conflict_line(c)}")
    print(f"\ndowntime (fence to unfence): {rep['downtime_seconds']} s")
    if rep["backup"]:
        print(f"backup: {rep['backup']}")
    for f in (rep.get("verify") or {}).get("failed", []):
        print(f"verify FAILED: {f}")


def _dry_run(cfg, test: str, as_json: bool, allow_incomplete: bool) -> int:  # type: ignore[no-untyped-def]
    from pgcarry.cutover.phases import PHASES, STATE_KEY
    from pgcarry.replay import replay, sequences
    from pgcarry.replay.report import render

    with log_for(cfg, readonly=True) as log:
        integrity.check(cfg, log, allow_incomplete=allow_incomplete)
        done = {k for k, v in ((log.get_state(STATE_KEY) or {}).get("phases") or {}).items()
                if v.get("status") == "done"}
        rep = replay(cfg, log, test, dry_run=True,
                     production=sequences.from_source(cfg.source.dsn, test))
    todo = [p for p in PHASES if p not in done]
    if as_json:
        print_json({"phases": todo, "done": sorted(done), "plan": rep.as_dict()})
    else:
        print("would run: " + " -> ".join(todo))
        print("replay plan (against the test database, as production will be after the overwrite):")
        render(rep, print_table)
    return 0


def _check_triggers(cfg, test: str) -> None:  # type: ignore[no-untyped-def]
    """fire-triggers names, against the test database (what production becomes), before the fence."""
    from pgcarry.replay import session, triggers

    with session.connect(test) as conn:
        triggers.check(conn, cfg.replay)


def run(args: argparse.Namespace) -> int:
    """Overwrite production with the test database and replay the log, in resumable phases."""
    from pgcarry.cutover.phases import Cutover

    cfg = load_config(args)
    if args.dry_run and args.report:
        raise ConfigError("--report describes a cutover that ran", hint="drop --dry-run, or use "
                          "`pgcarry rehearse --report FILE`")
    if args.dry_run:
        return _dry_run(cfg, args.test, args.json, args.allow_incomplete)
    if not args.yes:
        raise ConfigError("cutover fences and overwrites production",
                          hint="check it with --dry-run (or `pgcarry rehearse`), then pass --yes")
    shown = for_output(args.json)
    with log_for(cfg) as log:
        stopped = log.lock().stop_holder()
        if stopped is not None:
            shown.note(f"stopped the capture daemon (pid {stopped}); the cutover drains the slot itself")
        other = log.active_writer()  # before the fence: the drain could not stop it
        if other is not None:
            raise LogError(f"another capture daemon writes the change log (host {other['host']}, pid "
                           f"{other['pid']}); the cutover would wait for it with production fenced",
                           hint="stop it on that host first, then run the cutover again")
        lock = log.lock().acquire()
        cut_state = (log.get_state("cutover") or {}).get("phases") or {}
        integrity.check(cfg, log, allow_incomplete=args.allow_incomplete,
                        source="overwrite" not in cut_state)
        _check_triggers(cfg, args.test)
        mode = "cmd" if args.fence_cmd or args.unfence_cmd else args.fence
        cut = Cutover(cfg, log, args.test, fence=mode, commands=(args.fence_cmd, args.unfence_cmd),
                      say=shown.note, progress=shown)
        try:
            rep = cut.run()
        except VerifyError:
            rep = cut.report()
            _show(args, rep, shown.note)
            raise
        finally:
            lock.release()
    _show(args, rep, shown.note)
    return 0


def _show(args: argparse.Namespace, rep: dict, note) -> None:  # type: ignore[no-untyped-def, type-arg]
    print_json(rep) if args.json else _render(rep)
    write_report(args, "cutover", rep, note)
