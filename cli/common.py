"""What every verb shares: loading the config (file + flags), opening the log, printing output."""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from pgcarry.changelog import ChangeLog, open_log
from pgcarry.schemas import config as config_mod
from pgcarry.schemas.config import Config
from pgcarry.schemas.lsn import Lsn


def add_common(p: argparse.ArgumentParser, *, json_flag: bool = True, source: bool = False) -> None:
    p.add_argument("--config", default=config_mod.DEFAULT_CONFIG, help="config file (default: %(default)s)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    if source:
        p.add_argument("--source", help="source DSN (overrides [source] dsn)")


def load_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Config:
    """Read --config and apply flag overrides (None = not given)."""
    path = Path(args.config)
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


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def progress(text: str) -> None:
    """One line of progress on stderr (a terminal sees it overwritten in place)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()
    else:
        sys.stderr.write(text + "\n")


def progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")
