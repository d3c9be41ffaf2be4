"""What every verb shares: loading the config (file + flags), opening the log, printing output."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from pgcarry.changelog import ChangeLog, open_log
from pgcarry.errors import ConfigError
from pgcarry.schemas import config as config_mod
from pgcarry.schemas.config import Config
from pgcarry.schemas.lsn import Lsn

CONFIG_ENV = "PGCARRY_CONFIG"
log = logging.getLogger(__name__)


def add_common(p: argparse.ArgumentParser, *, json_flag: bool = True, source: bool = False) -> None:
    """--json and --source; -c/--config, --traceback and -v every verb gets from cli/main.py."""
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    if source:
        p.add_argument("--source", help="source DSN (overrides [source] dsn)")


def config_path(args: argparse.Namespace, *, write: bool = False) -> Path:
    """-c/--config (after the verb, else before it), else $PGCARRY_CONFIG, else pgcarry.toml. A
    file named by the environment but missing is an error of its own (unless it is to be
    written): the user may not see where the name came from."""
    if getattr(args, "config", None):
        named, origin = args.config, "--config"
    elif os.environ.get(CONFIG_ENV):
        named, origin = os.environ[CONFIG_ENV], f"${CONFIG_ENV}"
        if not write and not Path(named).exists():
            raise ConfigError(f"{named}: no such config file (named by ${CONFIG_ENV})",
                              hint=f"unset {CONFIG_ENV} or pass --config FILE")
    else:
        named, origin = config_mod.DEFAULT_CONFIG, "the default"
    log.info("config file %s (from %s)", named, origin)
    return Path(named)


def load_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Config:
    """Read the config file (see config_path) and apply flag overrides (None = not given)."""
    path = config_path(args)
    data = config_mod.read_toml(path)
    return config_mod.parse(
        config_mod.merge(data, overrides or {}), origin=str(path), base=path.resolve().parent
    )


def log_for(cfg: Config, *, create: bool = False, readonly: bool = False) -> ChangeLog:
    return open_log(cfg.log, slot=cfg.source.slot, create=create, readonly=readonly)


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, Lsn):
        return str(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_default, ensure_ascii=False)
    sys.stdout.write("\n")


def warn(text: str) -> None:
    """A warning for a person, on stderr (also with --json: a script's reader sees stdout)."""
    print(f"pgcarry: WARNING: {text}", file=sys.stderr, flush=True)


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="FILE.html",
                   help="also write the report as a self-contained HTML page (time line, counts, conflicts)")


def write_report(args: argparse.Namespace, kind: str, rep: dict[str, Any],
                 note: Callable[[str], None]) -> None:
    """--report FILE: the HTML page of `rep` (cutover/report_html.py)."""
    if getattr(args, "report", None):
        from pgcarry.cutover import report_html

        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        note(f"report: {report_html.write(args.report, {**rep, 'kind': kind, 'generated_at': stamp})}")


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
