"""`pgcarry init`: write a commented pgcarry.toml from the source catalog."""

from __future__ import annotations

import argparse
import os

from pgcarry.capture.init_config import generate
from pgcarry.cli.common import config_path
from pgcarry.errors import ConfigError
from pgcarry.schemas import config as config_mod

NAME = "init"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(NAME, help="write a commented pgcarry.toml from the source catalog")
    p.add_argument("--source", required=True, help="source DSN")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def run(args: argparse.Namespace) -> int:
    """Write a commented pgcarry.toml from the source catalog."""
    path = config_path(args, write=True)
    if path.exists() and not args.force:
        raise ConfigError(f"{path} exists", hint="pass --force to overwrite it")
    text = generate(args.source)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    config_mod.parse(config_mod.read_toml(path), origin=str(path))  # what we wrote must load
    print(f"wrote {path}; review it, then run `pgcarry start`")
    return 0
