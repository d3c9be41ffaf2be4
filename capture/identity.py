"""What capture notices about changes it cannot carry exactly, recorded in the log's state.

Did an UPDATE/DELETE bring the old image the manifest promised (REPLICA IDENTITY FULL)?
Checked on the raw wal2json text, without parsing it: inside JSON strings every quote is escaped,
so an unescaped ``{"name":`` only ever opens a column entry, and counting them per image is a C
loop. Under FULL the old image ("identity") holds every column, and an UPDATE's new image never
holds more (unchanged TOAST is left out of the new one only). After ``REPLICA IDENTITY DEFAULT``
the old image is the key alone; after ``NOTHING`` wal2json drops the change and warns instead.
"""

from __future__ import annotations

import json
import logging
import re

from pgcarry.capture.routing import Name, Route
from pgcarry.changelog.base import ChangeLog
from pgcarry.changelog.integrity import note_unsafe
from pgcarry.schemas.change import ACTION_NAMES
from pgcarry.schemas.lsn import Lsn

log = logging.getLogger(__name__)

_ENTRY = '{"name":'
_COLUMNS, _IDENTITY, _PK = '"columns":[', '"identity":[', '"pk":['
_NO_IDENTIFIER = re.compile(r'no tuple identifier for (UPDATE|DELETE) in table "(.*)"\Z', re.S)


def missing(raw: str, action: str, entries: int = 0) -> str | None:
    """What an UPDATE ("U") or DELETE ("D") lacks of a FULL old image, or None. A DELETE needs
    only its key to replay exactly, so only a DELETE without any old image counts. `entries` is
    what a FULL old image plus the key list usually hold (the manifest's columns + key columns):
    reaching it settles the common case with one count; short of it (a column dropped since T0,
    or a partial image) the old image is compared with the new one."""
    i = raw.find(_IDENTITY)
    if i < 0:
        return "an old image"
    if action != "U" or raw.count(_ENTRY, i) >= entries:
        return None
    end = raw.find(_PK, i)
    old = raw.count(_ENTRY, i, end if end >= 0 else len(raw))
    new = raw.count(_ENTRY, raw.find(_COLUMNS), i)
    return f"the old values of {new - old} of its {new} columns" if old < new else None


def dropped(notice: str) -> tuple[str, list[tuple[str, str]]] | None:
    """wal2json's warning for a change it dropped (no replica identity): the action and the
    (schema, table) candidates (a name may itself hold '"."'), or None for other notices."""
    text = notice.strip()
    text = text.split(":", 1)[1].strip() if text.startswith("WARNING:") else text
    m = _NO_IDENTIFIER.search(text)
    if m is None:
        return None
    both = m.group(2)
    cuts = [i for i in range(len(both)) if both.startswith('"."', i)]
    return m.group(1), [(both[:i], both[i + 3:]) for i in cuts]


class Watch:
    """Checks each UPDATE/DELETE/TRUNCATE and wal2json's warnings; records what replay refuses."""

    def __init__(self, changelog: ChangeLog, routes: dict[Name, Route]) -> None:
        self.log, self.routes = changelog, routes
        self._truncated: tuple[int, str] | None = None  # the last TRUNCATE of a partitioned table

    def change(self, route: Route, action: str, raw: str, lsn: Lsn) -> bool:
        """Record an UPDATE/DELETE without the promised old image; False for a TRUNCATE not to
        store (a partition's share of its table's TRUNCATE)."""
        if action == "T":
            return not self._partition_truncated(route, raw, lsn)
        if route.full:
            lacks = missing(raw, action, route.entries)
            if lacks:
                self._identity_lost(route, action, lsn, lacks)
        return True

    def notices(self, notices: list[str], lsn: Lsn | None) -> None:
        """Changes wal2json dropped (its WARNING "no tuple identifier": REPLICA IDENTITY NOTHING)."""
        for notice in notices:
            found = dropped(notice)
            for name in found[1] if found else ():
                route = self.routes.get(name)
                if route is not None:
                    self._identity_lost(route, found[0][0], lsn, "a replica identity (wal2json dropped it)")

    def _partition_truncated(self, route: Route, raw: str, lsn: Lsn) -> bool:
        """A TRUNCATE of a partitioned table arrives once for it and once per partition (those
        are skipped: the table's own covers them); one of a partition alone cannot be replayed."""
        doc_name = _name(raw)
        if doc_name == (route.schema, route.table):
            self._truncated = (lsn.value, route.relation)
            return False
        if self._truncated == (lsn.value, route.relation):
            return True
        note_unsafe(self.log, route.relation, "partition-truncated", lsn,
                    f"partition {doc_name[0]}.{doc_name[1]} was truncated alone (replay would "
                    "truncate the whole table)")
        return False

    def _identity_lost(self, route: Route, action: str, lsn: Lsn | None, lacks: str) -> None:
        if note_unsafe(self.log, route.relation, "identity", lsn,
                       f"an {ACTION_NAMES[action].upper()} arrived without {lacks}: production's "
                       "REPLICA IDENTITY is no longer FULL"):
            log.error("%s: an %s at %s arrived without %s (REPLICA IDENTITY changed on production); "
                      "replay will refuse this table", route.relation, ACTION_NAMES[action], lsn, lacks)


def _name(raw: str) -> Name:
    doc = json.loads(raw)  # a TRUNCATE is small
    return doc["schema"], doc["table"]
