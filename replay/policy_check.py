"""The [replay] policies checked against what was captured before replay, rehearse or cutover
runs: a policy on a table or column production never had, or `delta` on a column that is not a
number, is a config error (exit 2), one line each. A column production added during capture is
not in the T0 manifest but is in the log: those count too (the log is read only for them)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from pgcarry.changelog.base import ChangeLog
from pgcarry.errors import ConfigError
from pgcarry.schemas.config import Config
from pgcarry.schemas.manifest import Manifest

NUMERIC = ("smallint", "integer", "bigint", "numeric", "decimal", "real", "double precision", "money")


class _Named(msgspec.Struct):
    name: str


class _Columns(msgspec.Struct):
    columns: list[_Named] = []
    identity: list[_Named] = []


_names = msgspec.json.Decoder(_Columns).decode


def logged_columns(log: ChangeLog, wanted: dict[str, set[str]]) -> dict[str, set[str]]:
    """Of the columns `wanted` per relation, those some captured change of it carries."""
    found: dict[str, set[str]] = {rel: set() for rel in wanted}
    todo = sum(len(v) for v in wanted.values())
    for _c, _l, _a, schema, table, raw in log.raw_changes(None):
        rel = f"{schema}.{table}"
        if rel not in wanted or not raw:
            continue
        try:
            doc = _names(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a TRUNCATE, or damage replay reports itself
        hits = {c.name for c in doc.columns + doc.identity} & wanted[rel] - found[rel]
        found[rel] |= hits
        todo -= len(hits)
        if not todo:
            break
    return found


def _named(cfg: Config, rel: str) -> Iterable[tuple[str, str]]:
    pol = cfg.replay.tables[rel]
    yield from [("columns", c) for c in pol.columns] + [("rename-columns", c) for c in pol.rename_columns]
    yield from [("ignore-columns", c) for c in pol.ignore_columns]


def _types(manifest: Manifest, rel: str) -> dict[str, str]:
    info = manifest.tables.get(rel)
    return {c.name: c.type for c in info.columns} if info else {}


def problems(cfg: Config, manifest: Manifest, log: ChangeLog | None = None) -> list[str]:
    unknown = {rel: {col for _k, col in _named(cfg, rel) if col not in _types(manifest, rel)}
               for rel in cfg.replay.tables if rel in manifest.tables}
    unknown = {rel: cols for rel, cols in unknown.items() if cols}
    seen = logged_columns(log, unknown) if log is not None and unknown else {}
    out = []
    for rel, pol in cfg.replay.tables.items():
        where = f'replay.tables."{rel}"'
        if rel not in manifest.tables:
            if not pol.ignore:
                out.append(f"{where}: no captured table {rel} (captured: {', '.join(sorted(manifest.tables))})")
            continue
        types = _types(manifest, rel)
        for key, col in _named(cfg, rel):
            if col not in types and col not in seen.get(rel, set()):
                out.append(f"{where}.{key}: {rel} has no column {col!r}")
        for col, policy in pol.columns.items():
            if policy == "delta" and col in types and not types[col].startswith(NUMERIC):
                out.append(f"{where}.columns.{col}: delta needs a number, but {col} is {types[col]}")
    return out


def check(cfg: Config, manifest: Manifest, origin: str = "config", log: ChangeLog | None = None) -> None:
    found = problems(cfg, manifest, log)
    if found:
        raise ConfigError(f"{origin}: " + f"\n{origin}: ".join(found))
