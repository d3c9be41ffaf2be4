"""The report a person reads after `cutover`, `stage` or `rehearse` (``--report FILE.html``): one
self-contained HTML page (inline CSS and SVG, no script, a CSP that forbids loading anything),
rendered by the pure function ``render(report)``; every name and value in it is escaped.

The report dict is what ``Cutover.report()`` and ``rehearse()`` return; every key is optional:

    kind                "cutover" | "stage" | "rehearse" (the title)
    complete | ok       bool: the outcome
    phases              [{"phase": str, "status": str, "started": unix seconds,
                          "seconds": float | None, "detail": ...}]   (in order; without
                          "started" the phases are laid end to end)
    fenced_at           unix seconds the fence held (marked on the time line) ...
    unfenced_at         ... and when it was lifted
    downtime_seconds, expected_downtime_seconds, fence_lsn, backup, restore, scratch: shown as given
    tables              [{"table": "schema.name", "captured": {"insert": n, "update": n,
                          "delete": n, "truncate": n}, "applied": {"insert": n, ...}}]
                        (``tables(replay_dict)`` builds it from replay's JSON report)
    conflicts           [{"table", "key", "lsn", "kind", "column", "decision"}]
    kept                [{"relation": "schema.name", "reason": str}]  relations left as they were
    verify              {"checks": n, "failed": [str]}, or failed: [str]
    generated_at        text for the footer
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Any

from pgcarry.schemas.change import ACTION_NAMES

OPS = ("insert", "update", "delete", "truncate")
WIDTH, LABEL, ROW = 900, 210, 26  # the SVGs' width, their label column and row height (px)
CSP = "default-src 'none'; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#176117}.bad{color:#a40000;font-weight:bold}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dt{color:#555}
svg text{font:12px system-ui,sans-serif}.phase{fill:#4a7bd0}.phase.pending{fill:#bbb}
.fence line{stroke:#c00;stroke-width:2;stroke-dasharray:5 3}.fence text{fill:#c00;font-weight:bold}
.down{fill:#f6d5d5}.captured{fill:#4a7bd0}.applied{fill:#3a9a4a}footer{color:#777;margin-top:2em}
"""


def tables(replay: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's per-table counts from replay's JSON report (``Report.as_dict()``)."""
    return [{"table": t["table"],
             "captured": {ACTION_NAMES.get(k, k): n for k, n in (t.get("captured") or {}).items()},
             "applied": t.get("applied") or {}} for t in replay.get("tables") or []]


def _e(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return escape("" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[list[Any]], numeric: frozenset[int] = frozenset(),
           cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{_e(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


Span = tuple[dict[str, Any], float | None, float]  # a phase, its start (None: not known), seconds


def _spans(phases: list[dict[str, Any]]) -> tuple[list[Span], float | None]:
    """(phase, start, seconds) with starts relative to the first start (returned too); without
    starts the phases are laid end to end."""
    t0 = min((p["started"] for p in phases if p.get("started") is not None), default=None)
    out, t = [], 0.0
    for p in phases:
        secs = float(p.get("seconds") or 0)
        if t0 is None:
            out.append((p, t, secs))
            t += secs
        else:
            out.append((p, None if p.get("started") is None else p["started"] - t0, secs))
    return out, t0


def _marker(x: float, height: int, label: str, cls: str) -> str:
    return (f'<g class="fence {cls}" id="{cls}-marker"><line x1="{x:.1f}" y1="14" x2="{x:.1f}" '
            f'y2="{height}"/><text x="{x + 3:.1f}" y="11">{_e(label)}</text></g>')


def _timeline(rep: dict[str, Any]) -> str:
    spans, first = _spans(rep.get("phases") or [])
    if not spans:
        return "<p>no phases ran</p>"
    end = max([s + d for _, s, d in spans if s is not None] + [1e-3])
    marks = {k: rep[k] - first for k in ("fenced_at", "unfenced_at") if rep.get(k) and first is not None}
    end = max([end] + list(marks.values()))
    scale = (WIDTH - LABEL - 70) / end
    height = 22 + ROW * len(spans)
    parts = []
    if "fenced_at" in marks:
        x0 = LABEL + marks["fenced_at"] * scale
        x1 = LABEL + marks.get("unfenced_at", end) * scale
        parts.append(f'<rect class="down" x="{x0:.1f}" y="14" width="{max(x1 - x0, 1):.1f}" '
                     f'height="{height - 14}"><title>fenced: writes refused</title></rect>')
    for i, (p, start, secs) in enumerate(spans):
        y = 20 + i * ROW
        done = p.get("status", "done") == "done"
        parts.append(f'<text x="0" y="{y + 14}">{_e(p.get("phase"))}</text>')
        if start is None or not done:
            parts.append(f'<text x="{LABEL}" y="{y + 14}">{_e(p.get("status") or "pending")}</text>')
            continue
        x, w = LABEL + start * scale, max(secs * scale, 2)
        parts.append(f'<rect class="phase" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW - 8}">'
                     f'<title>{_e(p.get("phase"))}: {secs:.3f} s</title></rect>'
                     f'<text x="{x + w + 4:.1f}" y="{y + 14}">{secs:.3f} s</text>')
    if "fenced_at" in marks:
        parts.append(_marker(LABEL + marks["fenced_at"] * scale, height, "fence", "fence"))
    if "unfenced_at" in marks:
        parts.append(_marker(LABEL + marks["unfenced_at"] * scale, height, "unfence", "unfence"))
    return (f'<svg id="timeline" width="{WIDTH}" height="{height + 4}" role="img" '
            f'aria-label="phases on a time line">{"".join(parts)}</svg>')


def _counts_chart(rows: list[dict[str, Any]]) -> str:
    totals = [(r["table"], sum((r.get("captured") or {}).values()), sum((r.get("applied") or {}).values()))
              for r in rows]
    top = max([max(c, a) for _, c, a in totals] + [1])
    scale = (WIDTH - 160) / top
    step = 3 * ROW - 20  # a table: its name, then its two bars
    parts = []
    for i, (name, cap, app) in enumerate(totals):
        y = 4 + i * step
        parts.append(f'<text x="0" y="{y + 12}">{_e(name)}</text>')
        for j, (cls, n) in enumerate((("captured", cap), ("applied", app))):
            w, yy = max(n * scale, 1), y + 16 + j * (ROW - 10)
            parts.append(f'<rect class="{cls}" x="0" y="{yy}" width="{w:.1f}" height="{ROW - 13}">'
                         f'<title>{_e(name)} {cls}: {n}</title></rect>'
                         f'<text x="{w + 4:.1f}" y="{yy + 11}">{cls} {n}</text>')
    return (f'<svg id="counts" width="{WIDTH}" height="{8 + len(totals) * step}" role="img" '
            f'aria-label="captured and applied per table">{"".join(parts)}</svg>')


def _summary(rep: dict[str, Any]) -> str:
    outcome = rep.get("complete", rep.get("ok"))
    items = [("outcome", "passed" if outcome else "NOT complete" if outcome is not None else "-")]
    for key, label in (("downtime_seconds", "downtime (fence to unfence), s"),
                       ("expected_downtime_seconds", "expected downtime, s"), ("fence_lsn", "fence LSN"),
                       ("backup", "backup"), ("restore", "to go back"), ("scratch", "scratch database")):
        if rep.get(key) is not None:
            items.append((label, rep[key]))
    cls = "ok" if outcome else "bad"
    dl = "".join(f"<dt>{_e(k)}</dt><dd{' class=' + cls if k == 'outcome' else ''}>{_e(v)}</dd>"
                 for k, v in items)
    return f'<dl id="summary">{dl}</dl>'


def render(rep: dict[str, Any]) -> str:
    """The whole page for the report dict `rep` (see the module docstring)."""
    kind = rep.get("kind") or "cutover"
    rows = rep.get("tables") or []
    conflicts = rep.get("conflicts") or []
    kept = rep.get("kept") or []
    failed = (rep.get("verify") or {}).get("failed") or rep.get("failed") or []
    sections = [
        f"<h1>pgcarry {_e(kind)} report</h1>", _summary(rep),
        "<h2>Phases</h2>", _timeline(rep),
        "" if rep.get("fenced_at") else "<p>no fence on this time line: nothing was fenced</p>",
        _table(["phase", "status", "seconds"], [[p.get("phase"), p.get("status", "done"), p.get("seconds")]
                                                 for p in rep.get("phases") or []], frozenset({2}), "phases"),
        "<h2>Tables: captured and applied</h2>",
        _counts_chart(rows) if rows else "<p>no table replayed</p>",
        _table(["table"] + [f"captured {o}" for o in OPS] + [f"applied {o}" for o in OPS[:3]],
               [[r["table"]] + [(r.get("captured") or {}).get(o, 0) for o in OPS]
                + [(r.get("applied") or {}).get(o, 0) for o in OPS[:3]] for r in rows],
               frozenset(range(1, 8)), "counts") if rows else "",
        f"<h2>Conflicts ({len(conflicts)})</h2>",
        _table(["table", "key", "lsn", "kind", "column", "decision"],
               [[c.get(k) for k in ("table", "key", "lsn", "kind", "column", "decision")] for c in conflicts],
               cls="conflicts") if conflicts else "<p>no conflicts</p>",
        f"<h2>Kept relations ({len(kept)})</h2>",
        _table(["relation", "reason"], [[k.get("relation"), k.get("reason")] for k in kept], cls="kept")
        if kept else "<p>none</p>",
    ]
    if failed:
        sections += ["<h2 class=bad>Verify failed</h2><ul id=failed>"
                     + "".join(f"<li>{_e(f)}</li>" for f in failed) + "</ul>"]
    at = f" at {_e(rep['generated_at'])}" if rep.get("generated_at") else ""
    foot = f"<footer>generated by pgcarry{at}</footer>"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>pgcarry {_e(kind)} report</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + foot + "</body></html>\n")


def write(path: str | Path, rep: dict[str, Any]) -> Path:
    """Write the page, readable by its owner only (conflict keys are customer data)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render(rep))
    os.chmod(path, 0o600)
    return path
