"""Triggers during replay. Replay runs with session_replication_role = replica: production's
triggers already ran and their effects are in the log, so they must not fire again — and neither
then do triggers only the test side has (the dry run and the report list those). A trigger named
in `fire-triggers` is set to ENABLE ALWAYS inside the replay transaction and put back as it was
before the commit (other sessions never see the change), so it fires once per replayed row; an
unknown name is a config error before anything runs. Replaying into a table whose trigger is
ENABLE ALWAYS or REPLICA fires it too: listed as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgcarry.errors import ConfigError
from pgcarry.schemas.config import ReplayConfig
from pgcarry.schemas.manifest import Manifest

_TRIGGERS = """
SELECT n.nspname, c.relname, t.tgname, t.tgenabled
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgrelid = ANY(%s)
ORDER BY 1, 2, 3
"""
# ALTER TABLE ... <how> TRIGGER for each pg_trigger.tgenabled
_STATE = {"O": "ENABLE", "D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


@dataclass(frozen=True)
class Trigger:
    schema: str
    table: str
    name: str
    enabled: str  # pg_trigger.tgenabled: O(rigin), D(isabled), R(eplica), A(lways)
    production: bool | None  # production had it on this table at T0 (None: not recorded)
    named: bool  # in fire-triggers

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def fires(self) -> bool:
        """Whether it fires during replay (under session_replication_role = replica)."""
        return self.named or self.enabled in ("A", "R")

    @property
    def listed(self) -> bool:
        """Worth telling: a test-side trigger (it does not fire unless named), or one that fires."""
        return self.production is False or self.fires

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.relation, "trigger": self.name, "production": self.production,
                "fires": self.fires}


def check(conn: psycopg.Connection, cfg: ReplayConfig) -> None:
    """Refuse a `fire-triggers` name the target table does not have (before anything runs)."""
    problems = []
    for src, pol in cfg.tables.items():
        if not pol.fire_triggers or pol.ignore:
            continue
        rel = pol.rename_to or src
        have = {r[0] for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = "
            "to_regclass(format('%%I.%%I', %s::text, %s::text))", tuple(rel.split(".", 1)))}
        for name in pol.fire_triggers:
            if name not in have:
                problems.append(f'replay.tables."{src}".fire-triggers: {rel} has no trigger '
                                f"{name!r} in the target (its triggers: "
                                f"{', '.join(sorted(have)) or 'none'})")
    if problems:
        raise ConfigError("config: " + "\nconfig: ".join(problems))


def read(conn: psycopg.Connection, tables: dict[str, tuple[int, str]], cfg: ReplayConfig,
         manifest: Manifest | None) -> list[Trigger]:
    """The target's triggers on the replayed tables (target relation -> (oid, source relation)),
    each compared with production's at T0."""
    out = []
    for schema, table, name, enabled in conn.execute(
            _TRIGGERS, ([oid for oid, _src in tables.values()],)):
        src = tables[f"{schema}.{table}"][1]
        info = manifest.tables.get(src) if manifest else None
        prod = None if info is None or info.triggers is None else name in info.triggers
        out.append(Trigger(schema, table, name, enabled, prod, name in cfg.table(src).fire_triggers))
    return out


def _alter(conn: psycopg.Connection, t: Trigger, state: str) -> None:
    conn.execute(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
        sql.Identifier(t.schema, t.table), sql.SQL(_STATE[state]), sql.Identifier(t.name)))


def fire(conn: psycopg.Connection, triggers: list[Trigger]) -> list[Trigger]:
    """ENABLE ALWAYS the named triggers (in the caller's transaction); those switched."""
    switched = [t for t in triggers if t.named and t.enabled != "A"]
    for t in switched:
        _alter(conn, t, "A")
    return switched


def restore(conn: psycopg.Connection, switched: list[Trigger]) -> None:
    """Put the triggers `fire` switched back as they were, before the commit."""
    for t in switched:
        _alter(conn, t, t.enabled)
