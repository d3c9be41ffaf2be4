"""Relation patterns of `[capture] tables`/`exclude`: ``schema.table``, each part a glob or quoted.

Unquoted, ``*`` matches any run of characters and ``?`` one character; everything else (``[``
included) is literal and case-sensitive. A double-quoted stretch is literal (``""`` is one ``"``),
so ``"my.schema"."odd*name"`` names exactly that table. One unquoted ``.`` separates the parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_PLAIN = re.compile(r"[A-Za-z0-9_$\u0080-\U0010ffff]+")


@dataclass(frozen=True)
class RelationPattern:
    text: str
    schema: re.Pattern[str]
    table: re.Pattern[str]

    def matches(self, schema: str, table: str) -> bool:
        return bool(self.schema.fullmatch(schema) and self.table.fullmatch(table))


def _part(text: str, i: int, full: str) -> tuple[str, int]:
    """The regex of one part starting at `i`, and the index after it (at '.' or the end)."""
    out, start = [], i
    while i < len(text) and text[i] != ".":
        ch = text[i]
        if ch == '"':
            j, lit = i + 1, []
            while True:
                if j >= len(text):
                    raise ValueError(f"{full!r}: a double quote is not closed")
                if text[j] == '"' and text[j + 1:j + 2] == '"':
                    lit.append('"')
                    j += 2
                elif text[j] == '"':
                    break
                else:
                    lit.append(text[j])
                    j += 1
            if not lit:
                raise ValueError(f"{full!r}: empty quoted name")
            out.append(re.escape("".join(lit)))
            i = j + 1
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    if i == start:
        raise ValueError(f"{full!r}: expected \"schema.table\" (quote a name that has a dot: "
                         "\"\\\"my.schema\\\".table\")")
    return "".join(out), i


@lru_cache(maxsize=512)
def parse(text: str) -> RelationPattern:
    """Parse a ``schema.table`` pattern; ValueError says what is wrong in one line."""
    schema, i = _part(text, 0, text)
    if i >= len(text):
        raise ValueError(f"{text!r}: expected \"schema.table\" (a schema, a dot, a table)")
    table, j = _part(text, i + 1, text)
    if j < len(text):
        raise ValueError(f"{text!r}: more than one unquoted dot (quote a name that has a dot)")
    return RelationPattern(text, re.compile(schema, re.S), re.compile(table, re.S))


def quote(name: str) -> str:
    """`name` as a pattern part that matches exactly it."""
    return name if _PLAIN.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def exact(schema: str, table: str) -> str:
    """The pattern that matches exactly the relation schema.table."""
    return f"{quote(schema)}.{quote(table)}"
