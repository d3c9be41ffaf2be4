"""The [replay] policies checked against the manifest before replay, rehearse or cutover runs:
a policy on a table or column production never had, or `delta` on a column that is not a number,
is a config error (exit 2), one line each."""

from __future__ import annotations

from pgcarry.errors import ConfigError
from pgcarry.schemas.config import Config
from pgcarry.schemas.manifest import Manifest

NUMERIC = ("smallint", "integer", "bigint", "numeric", "decimal", "real", "double precision", "money")


def problems(cfg: Config, manifest: Manifest) -> list[str]:
    out = []
    for rel, pol in cfg.replay.tables.items():
        where = f'replay.tables."{rel}"'
        info = manifest.tables.get(rel)
        if info is None and pol.ignore:
            continue
        if info is None:
            out.append(f"{where}: no captured table {rel} (captured: {', '.join(sorted(manifest.tables))})")
            continue
        types = {c.name: c.type for c in info.columns}
        named = [("columns", c) for c in pol.columns] + [("rename-columns", c) for c in pol.rename_columns]
        named += [("ignore-columns", c) for c in pol.ignore_columns]
        for key, col in named:
            if col not in types:
                out.append(f"{where}.{key}: {rel} has no column {col!r}")
        for col, policy in pol.columns.items():
            if policy == "delta" and col in types and not types[col].startswith(NUMERIC):
                out.append(f"{where}.columns.{col}: delta needs a number, but {col} is {types[col]}")
    return out


def check(cfg: Config, manifest: Manifest, origin: str = "config") -> None:
    found = problems(cfg, manifest)
    if found:
        raise ConfigError(f"{origin}: " + f"\n{origin}: ".join(found))
