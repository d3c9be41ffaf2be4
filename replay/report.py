"""The replay report: one JSON object for `--json`, and the tables a person reads on a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgcarry.replay.run import Report

from pgcarry.replay.plan import key_label

MAX_LISTED = 50  # conflicts printed on a terminal; --json lists all


def conflict_line(c: dict[str, Any]) -> str:
    """One conflict, as --json holds it, for a person."""
    key = tuple(c["key"]) if isinstance(c["key"], list) else c["key"]
    column = f" {c['column']}" if c["column"] else ""
    return f"{c['table']} {key_label(key)} {c['kind']}{column}: {c['decision']}"


def report_dict(rep: Report) -> dict[str, Any]:
    out: dict[str, Any] = {"status": rep.status, "mode": rep.mode, "slot": rep.slot,
                           "after_lsn": rep.after, "duration_ms": rep.duration_ms}
    p = rep.plan
    if p is None:
        return out
    out.update({
        "first_lsn": str(p.first_lsn) if p.first_lsn else None,
        "last_lsn": str(p.last_lsn) if p.last_lsn else None,
        "transactions": p.transactions, "changes": p.changes,
        "order": [tp.relation for tp in p.ordered()],
        "deferred_cycles": p.order.deferred_cycles,
        "tables": [{"table": tp.relation, "source": tp.source,
                    "captured": {k: v for k, v in sorted(tp.fold.captured.items())},
                    "net": tp.counts(), "applied": rep.applied.get(tp.relation),
                    "full_identity": tp.full_identity, "notes": tp.notes}
                   for tp in p.ordered()],
        "keyless": [{"table": rel, "insert": n["insert"], "update": n["update"],
                     "delete": n["delete"], "applied": rep.applied.get(rel)}
                    for rel, n in rep.keyless.items()],
        "conflicts": [c.as_dict() for c in p.conflicts],
        "drift": [{"kind": d.kind, "table": d.relation, "column": d.column, "detail": d.detail,
                   "resolve": d.resolve, "blocking": d.blocking} for d in p.drift],
        "sequences": [{"sequence": s, "value": v} for s, v in rep.sequences],
        "production_sequences": {"next": rep.production.next, "unknown": rep.production.unknown},
        "foreign_keys_checked": rep.fk_checked,
        "triggers": [t.as_dict() for t in rep.triggers if t.listed],
    })
    return out


def render(rep: Report, print_table: Any) -> None:
    """Print the report for a person: per-table counts, conflicts, drift."""
    if rep.status == "nothing":
        print(f"nothing to replay: the target already holds every captured change "
              f"(journal position {rep.after or 'none'})")
        return
    p = rep.plan
    assert p is not None
    head = "plan (dry run, nothing written)" if rep.status == "dry-run" else "replayed"
    print(f"{head}: {p.transactions} transactions, {p.changes} changes, "
          f"{p.first_lsn}..{p.last_lsn}, mode {rep.mode}")
    rows = []
    for tp in p.ordered():
        n, a = tp.counts(), rep.applied.get(tp.relation, {})
        rows.append([tp.relation, n["insert"], n["update"], n["delete"], n["noop"] + n["vanished"],
                     a.get("insert", "-"), a.get("update", "-"), a.get("delete", "-")])
    print_table(["table (FK order)", "ins", "upd", "del", "folded", "applied ins", "upd", "del"], rows)
    for tp in p.ordered():
        for note in tp.notes:
            print(f"note: {tp.relation}: {note}")
    if p.conflicts:
        print(f"\n{len(p.conflicts)} conflict(s):")
        print_table(["table", "key", "lsn", "kind", "column", "decision"],
                    [[c.table, c.label, c.lsn, c.kind, c.column or "", c.decision]
                     for c in p.conflicts[:MAX_LISTED]])
        if len(p.conflicts) > MAX_LISTED:
            print(f"... {len(p.conflicts) - MAX_LISTED} more (see --json)")
    if p.drift:
        print("\nschema differences:")
        for d in p.drift:
            mark = "BLOCKS" if d.blocking else "info"
            col = f".{d.column}" if d.column else ""
            print(f"  [{mark}] {d.kind} {d.relation}{col}: {d.detail}")
            if d.resolve:
                print(f"          resolve with: {d.resolve}")
    _triggers(rep)
    if rep.sequences:
        print("\nsequences advanced: " + ", ".join(f"{s}={v}" for s, v in rep.sequences))
    if rep.production.unknown:
        print(f"note: sequences were moved past the largest value present only: "
              f"{rep.production.unknown}")


def _triggers(rep: Report) -> None:
    listed = [t for t in rep.triggers if t.listed]
    if listed:
        print("\ntriggers on replayed tables that production lacks, or that fire during replay:")
    for t in listed:
        where = {False: "only on the test side", True: "also on production",
                 None: "production's not recorded"}[t.production]
        how = ("fires (fire-triggers)" if t.named else "fires (ENABLE ALWAYS/REPLICA)" if t.fires
               else "does not fire; name it in fire-triggers to fire it")
        print(f"  {t.relation}.{t.name}: {where}; {how}")
