"""Rehearsal: the cutover's overwrite, replay, unmask and verify against a scratch database (created
on the production server, or given), with no fence, no drain and no change to production or the slot.
Reports each phase's duration, the expected downtime and every conflict the real cutover will meet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from pgcarry import progress as prog
from pgcarry.changelog.base import ChangeLog
from pgcarry.cutover import report_html, unmask
from pgcarry.cutover.overwrite import overwrite
from pgcarry.errors import LogError
from pgcarry.replay import pii, replay, sequences
from pgcarry.replay.verify import verify
from pgcarry.schemas.config import Config
from pgcarry.schemas.dsn import safe_dsn, with_options


def _create_scratch(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_options(dsn, dbname=name)


def _drop_scratch(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rehearse(cfg: Config, log: ChangeLog, test_dsn: str, *, scratch: str | None = None,
             keep: bool = False, say: Callable[[str], None] = lambda s: None,
             progress: prog.Progress = prog.NULL) -> dict[str, Any]:
    manifest = log.read_manifest()
    if manifest is None:
        raise LogError("the change log has no manifest", hint="run `pgcarry start` first")
    pii.refuse_unready(manifest, cfg, test_dsn)
    name = f"pgcarry_rehearse_{cfg.source.slot}"
    target = scratch or _create_scratch(cfg.source.dsn, name)
    phases: list[dict[str, Any]] = []

    def phase(label: str, fn: Callable[[], Any]) -> Any:
        say(f"rehearse: {label} ...")
        started, t0 = time.time(), time.monotonic()
        result = fn()
        phases.append({"phase": label, "started": started, "seconds": round(time.monotonic() - t0, 3)})
        return result

    try:
        schemas = sorted({t.schema_name for t in manifest.tables.values()})
        phase("overwrite", lambda: overwrite(target, test_dsn, schemas, cfg.copy_.jobs))
        phase("backup (masked values)", lambda: unmask.save(cfg.source.dsn, manifest, cfg, log, into=target))
        phase("unmask", lambda: unmask.restore(target, manifest, cfg))
        rep = phase("replay", lambda: replay(
            cfg, log, target, progress=progress,
            production=sequences.from_source(cfg.source.dsn, target))).as_dict()
        checks = phase("verify", lambda: verify(cfg, log, target))
    finally:
        if not scratch and not keep:
            _drop_scratch(cfg.source.dsn, name)
    failed = [f"{c.name} {c.table}: {c.detail}" for c in checks if not c.ok]
    return {"ok": not failed, "scratch": safe_dsn(target), "kept": bool(scratch or keep),
            "phases": phases, "expected_downtime_seconds": round(sum(p["seconds"] for p in phases), 3),
            "conflicts": rep.get("conflicts") or [], "failed": failed,
            "transactions": (rep.get("plan") or rep).get("transactions"), "tables": report_html.tables(rep)}
