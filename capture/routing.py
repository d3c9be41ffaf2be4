"""Which captured relation a change belongs to, and what the manifest promised about it.

wal2json names a change by the partition its row lives in; the user named the partitioned table.
The router maps every partition to that root: those of T0 from the manifest, those created or
attached later from the source catalog when their first change arrives (recorded in the log's
state), and notices partitions that leave the tree (detached or dropped: their rows left the
table without a change in the stream).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from pgcarry.changelog.base import ChangeLog
from pgcarry.changelog.integrity import LEARNED_PARTITIONS, note_unsafe
from pgcarry.schemas.lsn import Lsn
from pgcarry.schemas.manifest import Manifest

log = logging.getLogger(__name__)

Name = tuple[str, str]
CHECK_INTERVAL = 60.0  # seconds between looks at the partition trees (detached/dropped ones)

_ROOT = """
SELECT rn.nspname, r.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = pg_partition_root(c.oid) JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""
_TREES = """
SELECT n.nspname, c.relname, rn.nspname, r.relname
FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
CROSS JOIN LATERAL pg_partition_tree(r.oid) t
JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (rn.nspname, r.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])) AND t.level > 0
"""


class Route:
    """Where a (schema, table) of the stream is stored, and whether its old images must be FULL."""

    __slots__ = ("schema", "table", "relation", "full", "entries")

    def __init__(self, root: Name, full: bool, entries: int = 0) -> None:
        self.schema, self.table = root
        self.relation = f"{root[0]}.{root[1]}"
        self.full = full
        self.entries = entries  # column entries of a FULL old image + the key list (identity.py)


class Router:
    def __init__(self, manifest: Manifest, dsn: str, changelog: ChangeLog) -> None:
        self.dsn, self.log = dsn, changelog
        self.routes: dict[Name, Route] = {}
        self.roots: dict[Name, Route] = {}
        for info in manifest.tables.values():
            own = (info.schema_name, info.name)
            route = self.routes[own] = Route(own, info.replica_identity == "full",
                                             len(info.columns) + len(info.primary_key))
            if info.partitioned:
                self.roots[own] = route
                for s, n in info.partitions:
                    self.routes[(s, n)] = route
        # the schemas streamed whole (capture/t0.py): a partition elsewhere never reaches us
        self.streamed = {s for (s, _), r in self.routes.items() if r in self.roots.values()}
        for leaf in (changelog.get_state(LEARNED_PARTITIONS) or {}).values():
            root = self.roots.get(tuple(leaf["root"]))  # type: ignore[arg-type]
            if root is not None:
                self.routes[(leaf["schema"], leaf["name"])] = root
        self._not_captured: set[Name] = set()  # asked within the current transaction
        self._conn: psycopg.Connection[Any] | None = None
        self._checked = 0.0

    def route(self, schema: str, table: str, lsn: Lsn) -> Route | None:
        """The route of a change, or None when its relation is not captured."""
        r = self.routes.get((schema, table))
        if r is not None or not self.roots or (schema, table) in self._not_captured:
            return r
        return self._learn(schema, table, lsn)

    def transaction(self) -> None:
        """A new transaction began: a relation may have become a partition since the last one."""
        self._not_captured.clear()

    def _source(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        return self._conn

    def _learn(self, schema: str, table: str, lsn: Lsn) -> Route | None:
        """A relation first seen in a streamed schema: a partition of a captured root attached or
        created after T0, or a table that is not captured."""
        row = self._source().execute(_ROOT, (schema, table)).fetchone()
        root = self.roots.get((row[0], row[1])) if row else None
        if root is None:
            self._not_captured.add((schema, table))
            return None
        self.routes[(schema, table)] = root
        learned = self.log.get_state(LEARNED_PARTITIONS) or {}
        learned[f"{schema}.{table}"] = {"schema": schema, "name": table,
                                        "root": [root.schema, root.table], "first_lsn": str(lsn)}
        self.log.set_state(LEARNED_PARTITIONS, learned)
        log.warning("capturing %s.%s, a partition of %s that was not there at T0 (first change at %s)",
                    schema, table, root.relation, lsn)
        return root

    def check(self, position: Lsn | None, *, force: bool = False) -> None:
        """Record every known partition that left its captured tree (at most once a minute)."""
        if not self.roots or (not force and time.monotonic() - self._checked < CHECK_INTERVAL):
            return
        self._checked = time.monotonic()
        names = list(self.roots)
        rows = self._source().execute(_TREES, ([s for s, _ in names], [n for _, n in names])).fetchall()
        now = {(r[0], r[1]) for r in rows}
        for name, route in self.routes.items():
            if route.relation != f"{name[0]}.{name[1]}" and name not in now:
                note_unsafe(self.log, route.relation, "partition-gone", position,
                            f"partition {name[0]}.{name[1]} was detached or dropped on production "
                            "after T0: its rows left the table without a change in the stream")
        for schema, name, root_schema, root in rows:
            if schema not in self.streamed:
                note_unsafe(self.log, f"{root_schema}.{root}", "partition-elsewhere", position,
                            f"partition {schema}.{name} was created in schema {schema}, which "
                            "capture does not stream (none of the table's partitions was there at T0)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

