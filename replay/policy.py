"""Conflict policies: the three-way column merge and the row-level rules, as values and as SQL.

``merge`` decides one column in Python (the reference the tests hold the SQL to); ``merge_sql``
builds the same decision as an expression over the target row ("ours"), production's old value
("base") and production's new value ("new"), so replay and verify can apply it set-wise. Every
comparison is NULL-safe; with ``text`` (a type without btree equality, see replay/types.py) it
compares the values' text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg import sql

from pgcarry.schemas.config import ReplayConfig

SOURCE_WINS, TARGET_WINS, DELTA = "source-wins", "target-wins", "delta"


@dataclass(frozen=True)
class Rules:
    """The policies of one captured relation, defaults resolved."""

    relation: str
    column_default: str
    columns: dict[str, str] = field(default_factory=dict)
    insert_exists: str = "fail"
    update_missing: str = "fail"
    delete_missing: str = "skip"
    truncate: str = "fail"

    def column(self, name: str) -> str:
        return self.columns.get(name, self.column_default)


def rules_for(cfg: ReplayConfig, relation: str) -> Rules:
    t = cfg.table(relation)
    return Rules(
        relation=relation,
        column_default=cfg.column,
        columns=dict(t.columns),
        insert_exists=t.insert_exists or cfg.insert_exists,
        update_missing=t.update_missing or cfg.update_missing,
        delete_missing=t.delete_missing or cfg.delete_missing,
        truncate=t.truncate or cfg.truncate,
    )


def is_conflict(ours: Any, base: Any, new: Any) -> bool:
    """Both sides changed the column, to different values."""
    return ours != base and ours != new


def merge(policy: str, ours: Any, base: Any, new: Any) -> Any:
    """The value a column production changed from `base` to `new` ends with, given `ours`."""
    if policy == DELTA:
        if base is None or ours is None or new is None:
            return new
        ours, base, new = (Decimal(v) if isinstance(v, str) else v for v in (ours, base, new))
        return ours + (new - base)
    if policy == TARGET_WINS and is_conflict(ours, base, new):
        return ours
    return new


def distinct_sql(a: sql.Composable, b: sql.Composable, text: bool = False) -> sql.Composable:
    """`a IS DISTINCT FROM b`; with `text`, of the values' text."""
    if text:
        return sql.SQL("({}::text IS DISTINCT FROM {}::text)").format(a, b)
    return sql.SQL("({} IS DISTINCT FROM {})").format(a, b)


def merge_sql(policy: str, ours: sql.Composable, base: sql.Composable,
              new: sql.Composable, text: bool = False) -> sql.Composable:
    """`merge` as a SQL expression (NULL-safe comparisons)."""
    if policy == DELTA:
        return sql.SQL(
            "CASE WHEN {b} IS NULL OR {o} IS NULL OR {n} IS NULL THEN {n} ELSE {o} + ({n} - {b}) END"
        ).format(o=ours, b=base, n=new)
    if policy == TARGET_WINS:
        return sql.SQL("CASE WHEN NOT {d} THEN {n} ELSE {o} END").format(
            d=distinct_sql(ours, base, text), o=ours, n=new)
    return new


def conflict_sql(ours: sql.Composable, base: sql.Composable, new: sql.Composable,
                 text: bool = False) -> sql.Composable:
    """`is_conflict` as a SQL boolean."""
    return sql.SQL("({} AND {})").format(distinct_sql(ours, base, text),
                                         distinct_sql(ours, new, text))


def table_decision(rule: str, kind: str) -> str:
    """The decision text for a row-level conflict of `kind` under policy `rule`."""
    verbs = {
        ("insert-exists", "fail"): "fail", ("insert-exists", "source-wins"): "overwrite",
        ("insert-exists", "target-wins"): "keep target row",
        ("update-missing", "fail"): "fail", ("update-missing", "skip"): "skip",
        ("update-missing", "reinsert"): "reinsert", ("delete-missing", "skip"): "skip",
        ("delete-missing", "fail"): "fail", ("truncate", "fail"): "fail",
        ("truncate", "apply"): "truncate target table",
    }
    return verbs[(kind, rule)]
