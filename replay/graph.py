"""Foreign-key order: parents before children for inserts and updates, the reverse for deletes.

Pure logic. Self-references are ordered within a table (``order_self``); a cycle through
DEFERRABLE constraints is allowed (replay defers them), a non-deferrable one is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgcarry.errors import ReplayError


@dataclass(frozen=True)
class Edge:
    child: str  # the referencing relation
    parent: str  # the referenced relation
    deferrable: bool = False
    name: str = ""


@dataclass
class Order:
    tables: list[str]  # parents first
    deferred_cycles: list[list[str]] = field(default_factory=list)
    self_referencing: list[str] = field(default_factory=list)

    @property
    def deletes(self) -> list[str]:
        return list(reversed(self.tables))


def _sccs(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (deep FK chains stay safe)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = len(index)
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(succ[nxt])))
            elif nxt in on:
                low[v] = min(low[v], index[nxt])
    return out


def order_tables(tables: Iterable[str], edges: Iterable[Edge]) -> Order:
    """Parents-first order of `tables`; edges to tables outside the set are ignored."""
    nodes = sorted(set(tables))
    inside = set(nodes)
    edges = [e for e in edges if e.child in inside and e.parent in inside]
    selfref = sorted({e.child for e in edges if e.child == e.parent})
    succ: dict[str, list[str]] = {n: [] for n in nodes}  # child -> parents
    for e in edges:
        if e.child != e.parent:
            succ[e.child].append(e.parent)
    order = Order([], [], selfref)
    # Tarjan emits a component after every component it reaches: parents before children.
    for comp in _sccs(nodes, {k: sorted(v) for k, v in succ.items()}):
        if len(comp) > 1:
            hard = sorted({f"{e.child} -> {e.parent}" for e in edges
                           if e.child in comp and e.parent in comp and e.child != e.parent
                           and not e.deferrable})
            if hard:
                raise ReplayError(
                    "foreign keys form a cycle through non-deferrable constraints: "
                    + ", ".join(hard),
                    tables=",".join(comp),
                    hint="make one of these constraints DEFERRABLE, or replay with --mode txn",
                )
            order.deferred_cycles.append(comp)
        order.tables.extend(comp)
    return order


def order_self(rows: Sequence[Any], key_of: Any, parent_of: Any) -> list[Any]:
    """Order rows of a self-referencing table so that a row's parent (when among the rows)
    comes first. A cycle among the rows keeps its input order (the constraint must be deferred)."""
    by_key = {key_of(r): r for r in rows}
    done: set[Any] = set()
    out: list[Any] = []
    for r in rows:
        chain = []
        cur: Any = r
        seen: set[Any] = set()
        while cur is not None and key_of(cur) not in done and key_of(cur) not in seen:
            seen.add(key_of(cur))
            chain.append(cur)
            cur = by_key.get(parent_of(cur))
        for c in reversed(chain):
            done.add(key_of(c))
            out.append(c)
    return out
