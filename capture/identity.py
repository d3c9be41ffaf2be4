"""Did an UPDATE/DELETE bring the old image the manifest promised (REPLICA IDENTITY FULL)?

Checked on the raw wal2json text, without parsing it: inside JSON strings every quote is escaped,
so an unescaped ``{"name":`` only ever opens a column entry, and counting them per image is a C
loop. Under FULL the old image ("identity") holds every column, and an UPDATE's new image never
holds more (unchanged TOAST is left out of the new one only). After ``REPLICA IDENTITY DEFAULT``
the old image is the key alone; after ``NOTHING`` wal2json drops the change and warns instead.
"""

from __future__ import annotations

import re

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
