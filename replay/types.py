"""How replay compares and stages a target column's values, decided from the target's catalog.

A type compares with `=` (IS DISTINCT FROM) when it has a default btree operator class — its own,
one reached by a binary-coercible implicit cast (varchar -> text), or as a domain, array,
composite, enum or range of such types. Any other type (json, xml, point, box, polygon, circle,
a user type without btree) compares as text: json has no `=` at all, `box = box` compares areas.
A domain column is staged as its base type: staged rows carry NULLs for columns production did
not send, which a NOT NULL domain would refuse; the write into the target applies its checks.
"""

from __future__ import annotations

from dataclasses import dataclass
import psycopg

_TYPES = """
SELECT t.oid, t.typtype, t.typcategory = 'A' AND t.typelem <> 0, t.typbasetype, t.typelem,
       r.rngsubtype, format_type(t.typbasetype, t.typtypmod),
       EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
               WHERE am.amname = 'btree' AND oc.opcdefault
                 AND (oc.opcintype = t.oid OR EXISTS (
                      SELECT 1 FROM pg_cast c WHERE c.castsource = t.oid
                         AND c.casttarget = oc.opcintype AND c.castmethod = 'b'
                         AND c.castcontext = 'i'))),
       ARRAY(SELECT a.atttypid FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_type t LEFT JOIN pg_range r ON r.rngtypid = t.oid
WHERE t.oid = ANY(%s)
"""


@dataclass(frozen=True)
class TypeFacts:
    text_compare: bool  # compare values as text: the type has no btree equality
    stage_type: str | None = None  # a domain's base type (format_type), staged instead of it


@dataclass(frozen=True)
class _Row:
    kind: str  # pg_type.typtype: b(ase) c(omposite) d(omain) e(num) r(ange) ...
    array: bool
    base: int
    elem: int
    subtype: int | None
    base_sql: str
    btree: bool
    attrs: tuple[int, ...]

    def refs(self) -> list[int]:
        return [o for o in (self.base, self.elem, self.subtype or 0, *self.attrs) if o]


def _rows(conn: psycopg.Connection, oids: set[int]) -> dict[int, _Row]:
    """pg_type facts of `oids` and of every type they are made of."""
    found: dict[int, _Row] = {}
    todo = set(oids)
    while todo:
        for oid, kind, array, base, elem, sub, base_sql, btree, attrs in conn.execute(
                _TYPES, (sorted(todo),)):
            found[oid] = _Row(kind, array, base, elem, sub, base_sql, btree, tuple(attrs))
        todo = {o for r in found.values() for o in r.refs()} - set(found)
    return found


def _comparable(rows: dict[int, _Row], oid: int, memo: dict[int, bool]) -> bool:
    if oid in memo:
        return memo[oid]
    memo[oid] = False  # a composite that contains itself (through an array) compares as text
    r = rows.get(oid)
    ok = r is not None and (
        r.btree or (r.kind == "d" and _comparable(rows, r.base, memo))
        or (r.array and _comparable(rows, r.elem, memo))
        or (r.kind == "c" and all(_comparable(rows, a, memo) for a in r.attrs))
        or r.kind == "e" or (r.kind == "r" and _comparable(rows, r.subtype or 0, memo)))
    memo[oid] = ok
    return ok


def _stage_type(rows: dict[int, _Row], oid: int) -> str | None:
    r = rows.get(oid)
    if r is None or r.kind != "d":
        return None
    return _stage_type(rows, r.base) or r.base_sql


def facts(conn: psycopg.Connection, oids: set[int]) -> dict[int, TypeFacts]:
    """TypeFacts of each type in `oids`."""
    rows = _rows(conn, oids)
    memo: dict[int, bool] = {}
    return {o: TypeFacts(not _comparable(rows, o, memo), _stage_type(rows, o)) for o in oids}

