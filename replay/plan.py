"""The replay plan: folded effects mapped onto the target schema, in foreign-key order, with every
schema difference and (once the target was asked) every conflict and the decision its policy takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pgcarry.errors import ReplayError
from pgcarry.replay.catalog import ForeignKey, TargetTable
from pgcarry.replay.fold import TableFold
from pgcarry.replay.graph import Order, order_tables
from pgcarry.replay.policy import DELTA, SOURCE_WINS, TARGET_WINS, Rules, rules_for
from pgcarry.schemas.change import DELETE, INSERT, NUMBERS_AS_TEXT, UPDATE
from pgcarry.schemas.config import ReplayConfig
from pgcarry.schemas.lsn import Lsn
from pgcarry.schemas.manifest import Manifest


@dataclass
class Drift:
    kind: str  # missing-table | missing-column | key-differs | type-change | new-column |
    # ignored-column | renamed-column | needs-full-identity | sequence-unreadable
    relation: str
    column: str | None
    detail: str
    resolve: str | None = None  # the config line that settles it
    blocking: bool = False


Key = tuple[str | None, ...]  # a row's key as PostgreSQL prints it: JSON-safe for every type


@dataclass
class Conflict:
    table: str
    key: Key | str  # "*": the whole table (a TRUNCATE)
    lsn: Lsn | None
    kind: str  # insert-exists | update-missing | delete-missing | column | truncate | lost-value
    decision: str
    column: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "key": list(self.key) if isinstance(self.key, tuple) else self.key,
                "lsn": str(self.lsn) if self.lsn else None, "kind": self.kind,
                "column": self.column, "decision": self.decision}

    @property
    def label(self) -> str:
        return key_label(self.key)


def _part(v: str | None) -> str:
    if v is None:
        return "NULL"
    if v == "" or v == "NULL" or any(ch in v for ch in ',()"\\ \t\n'):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return v


def key_label(key: Key | str) -> str:
    """A key for a person: ``(1001)``, ``(a0ee..., 2)``; parts a reader could misread (empty,
    NULL, or with commas, quotes, parentheses or spaces) quoted as in a record literal."""
    return key if isinstance(key, str) else "(" + ", ".join(map(_part, key)) + ")"


def as_text(value: Any) -> str | None:
    """A value from the log (already through TablePlan.value) as PostgreSQL prints it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bytea_text(value: Any) -> Any:
    """A bytea value as its input function reads it: wal2json sends the hex digits bare."""
    return "\\x" + value if isinstance(value, str) else value


@dataclass
class TablePlan:
    source: str
    fold: TableFold
    rules: Rules
    target: TargetTable | None = None
    colmap: dict[str, str] = field(default_factory=dict)  # captured column -> target column
    full_identity: bool = True
    notes: list[str] = field(default_factory=list)
    nan_as_null: bool = True  # captured without numbers as text: NaN/±Infinity arrived as null

    @property
    def relation(self) -> str:
        return self.target.relation if self.target else self.source

    @property
    def key(self) -> list[str]:
        return [self.colmap.get(c, c) for c in self.fold.pk]

    @property
    def keyless(self) -> bool:
        """No key: rows are found by their old image (replay/keyless.py)."""
        return not self.fold.pk

    def value(self, column: str, value: Any) -> Any:
        """A captured value as the target's input function reads it (wal2json sends bytea as
        bare hex)."""
        return bytea_text(value) if self.fold.columns.get(column) == "bytea" else value

    def key_text(self, image: dict[str, Any]) -> Key:
        """The key of a captured image, as text (what conflicts and errors carry)."""
        return tuple(as_text(self.value(c, image.get(c))) for c in self.fold.pk)

    def text_compare(self, target_column: str) -> bool:
        """Whether the target column's type compares as text (see replay/types.py)."""
        assert self.target is not None
        return self.target.columns[target_column].text_compare

    def policy(self, target_column: str) -> str:
        src = next((s for s, t in self.colmap.items() if t == target_column), target_column)
        p = self.rules.column(src)
        return SOURCE_WINS if p == TARGET_WINS and not self.full_identity else p

    def counts(self) -> dict[str, int]:
        f = self.fold
        n = f.tally()
        return {"insert": n[INSERT], "update": n[UPDATE], "delete": n[DELETE], "noop": n["noop"],
                "vanished": f.vanished}


@dataclass
class Plan:
    tables: dict[str, TablePlan]  # keyed by target relation, in no particular order
    order: Order
    drift: list[Drift]
    fkeys: list[ForeignKey]
    conflicts: list[Conflict] = field(default_factory=list)
    first_lsn: Lsn | None = None
    last_lsn: Lsn | None = None
    transactions: int = 0
    changes: int = 0

    def ordered(self) -> list[TablePlan]:
        return [self.tables[r] for r in self.order.tables if r in self.tables]

    @property
    def blocking(self) -> list[Drift]:
        return [d for d in self.drift if d.blocking]


def _tcfg(rel: str) -> str:
    return f"[replay.tables.{json.dumps(rel)}]"


def _missing_column(tp: TablePlan, col: str, name: str, at_t0: bool) -> Drift:
    assert tp.target is not None
    why = "" if at_t0 else f"production added column {col} during capture (it is not in the T0 manifest); "
    c = json.dumps(col)
    return Drift("missing-column", tp.source, col, f"{why}the target {tp.target.relation} has no column {name}",
                 f'{_tcfg(tp.source)} ignore-columns = [{c}]  # or rename-columns = {{ {c} = "..." }}',
                 blocking=True)


def _map_columns(tp: TablePlan, cfg: ReplayConfig, types: dict[str, str], t0: set[str] | None,
                 drift: list[Drift]) -> None:
    """Map each captured column (`types`; `t0`: those the manifest knew) onto the target's."""
    t = tp.target
    assert t is not None
    pol = cfg.table(tp.source)
    for col, typ in types.items():
        if col in pol.ignore_columns:
            drift.append(Drift("ignored-column", tp.source, col,
                               "production's values of this column are dropped (ignore-columns)"))
            continue
        name = pol.rename_columns.get(col, col)
        tc = t.columns.get(name)
        if name != col and tc is not None:
            drift.append(Drift("renamed-column", tp.source, col,
                               f"production's values of this column go to {name} (rename-columns)"))
        if tc is None:
            drift.append(_missing_column(tp, col, name, t0 is None or col in t0))
        elif tc.generated:
            tp.notes.append(f"{name} is generated in the target: not replayed")
        else:
            tp.colmap[col] = name
            if typ and tc.type != typ:
                drift.append(Drift("type-change", tp.source, col, f"{typ} -> {tc.type} (cast through text)",
                                   f"{_tcfg(tp.source)} ignore-columns = [{json.dumps(col)}]"))
    mapped = set(tp.colmap.values())
    for name, tc in t.columns.items():
        if name not in mapped and not tc.generated and types:
            drift.append(Drift("new-column", tp.source, name, "not captured: inserts take its default"))


def _check_key(tp: TablePlan, drift: list[Drift]) -> None:
    assert tp.target is not None
    if tp.key and not tp.target.has_key(tp.key):
        drift.append(Drift("key-differs", tp.source, None,
                           f"captured key ({', '.join(tp.key)}) is not the target's primary key "
                           f"({', '.join(tp.target.primary_key) or 'none'}) nor a unique index on "
                           "NOT NULL columns", blocking=True))


def _identity(tp: TablePlan, manifest: Manifest | None, drift: list[Drift]) -> None:
    info = manifest.tables.get(tp.source) if manifest else None
    tp.full_identity = (info.replica_identity == "full") if info else not tp.fold.partial_old
    if tp.keyless:
        tp.notes.append("no primary key: each update or delete changes one row equal to its "
                        "old image" if tp.fold.ops else "no primary key: inserts replayed as they came")
        if tp.fold.ops and not tp.full_identity:
            drift.append(Drift("needs-full-identity", tp.source, None,
                               "without a key, updates and deletes need production's whole old row",
                               f"ALTER TABLE {tp.source} REPLICA IDENTITY FULL (before start)", True))
    if tp.full_identity:
        return
    tp.notes.append("REPLICA IDENTITY is not FULL: every column an update sent counts as changed")
    for col, p in tp.rules.columns.items():
        if p == DELTA:
            drift.append(Drift("needs-full-identity", tp.source, col,
                               "policy delta needs production's old values",
                               f"ALTER TABLE {tp.source} REPLICA IDENTITY FULL (before start)", True))


def _types(fold: TableFold, manifest: Manifest | None) -> tuple[dict[str, str], set[str] | None]:
    """Every captured column and its type (the manifest's, else wal2json's), and the columns the
    manifest knew at T0 (None without a manifest)."""
    info = manifest.tables.get(fold.relation) if manifest else None
    types = {c.name: c.type for c in info.columns if not c.generated} if info else {}
    for name, typ in fold.columns.items():
        types.setdefault(name, typ)
    return types, ({c.name for c in info.columns} if info else None)


def build(folds: dict[str, TableFold], targets: dict[str, TargetTable], fkeys: list[ForeignKey],
          cfg: ReplayConfig, manifest: Manifest | None = None) -> Plan:
    """Map each folded relation onto its target table and order them by foreign keys."""
    drift: list[Drift] = []
    tables: dict[str, TablePlan] = {}
    for rel, fold in sorted(folds.items()):
        pol = cfg.table(rel)
        if pol.ignore:
            continue
        tp = TablePlan(rel, fold, rules_for(cfg, rel), targets.get(pol.rename_to or rel))
        tp.nan_as_null = manifest is None or NUMBERS_AS_TEXT not in manifest.plugin_options
        if tp.target is None:
            drift.append(Drift("missing-table", rel, None, f"no table {pol.rename_to or rel} in the target",
                               f'{_tcfg(rel)} rename-to = "schema.table"  # or ignore = true', True))
            continue
        truncate_only = fold.keyed is None
        if truncate_only:  # only a TRUNCATE was captured: no change named the key
            fold.pk = list(tp.target.primary_key)
        _map_columns(tp, cfg, *_types(fold, manifest), drift)
        if truncate_only:  # the (empty) staging table still needs the key its joins read
            tp.colmap.update({k: k for k in fold.pk if k not in tp.colmap})
        _check_key(tp, drift)
        _identity(tp, manifest, drift)
        tables[tp.relation] = tp
    order = order_tables(tables, [fk.edge() for fk in fkeys])
    return Plan(tables, order, drift, fkeys)


def raise_blocking(plan: Plan) -> None:
    if plan.blocking:
        d = plan.blocking[0]
        more = f" (and {len(plan.blocking) - 1} more; see --dry-run)" if len(plan.blocking) > 1 else ""
        raise ReplayError(f"schema drift: {d.detail}{more}", table=d.relation, column=d.column,
                          hint=f"add to the config: {d.resolve}" if d.resolve else None)
