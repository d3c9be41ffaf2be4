"""--report FILE.html, rendered by a real headless browser: the phases on a time line with the fence
marked, the per-table counts, the conflicts and kept relations; self-contained and escaped."""

from __future__ import annotations

import json
import os
import re

from pgcarry.changelog.sqlite import SQLiteLog
from pgcarry.cutover.phases import PHASES
from pgcarry.cutover.report_html import render, write
from tests.browser import Dom, dump_dom, screenshot
from tests.helpers import cli
from tests.test_cutover import _both_sides, prepared  # noqa: F401 - a fixture

T = 1_700_000_000.0
HOSTILE = 'public."<script>document.body.dataset.pwned=1</script>"'
REPORT = {
    "kind": "cutover", "complete": True, "downtime_seconds": 2.3, "fence_lsn": "0/1234",
    "phases": [{"phase": "fence", "status": "done", "started": T, "seconds": 0.2},
               {"phase": "drain", "status": "done", "started": T + 0.2, "seconds": 0.5},
               {"phase": "replay", "status": "done", "started": T + 0.8, "seconds": 1.5},
               {"phase": "unfence", "status": "done", "started": T + 2.4, "seconds": 0.1},
               {"phase": "verify", "status": "pending", "seconds": None}],
    "fenced_at": T + 0.2, "unfenced_at": T + 2.5,
    "tables": [{"table": "public.orders", "captured": {"insert": 5000, "update": 20, "delete": 1, "truncate": 0},
                "applied": {"insert": 4990, "update": 20, "delete": 1}},
               {"table": HOSTILE, "captured": {"insert": 3}, "applied": {"insert": 3}}],
    "conflicts": [{"table": "public.coupons", "key": [1001], "lsn": "0/16B3F28", "kind": "insert-exists",
                   "column": None, "decision": "keep target row"},
                  {"table": "public.t", "key": ["<img src=x onerror=alert(1)>"], "lsn": "0/1",
                   "kind": "update-missing", "column": "a</td><td>b", "decision": "skip"}],
    "kept": [{"relation": "public.sessions", "reason": "excluded from capture </table><script>x()</script>"}],
}


def _rects(dom: Dom) -> list[dict]:  # type: ignore[type-arg]
    return [a for t, a in dom.tags if t == "rect" and a.get("class") == "phase"]


def test_the_browser_shows_phases_fence_counts_conflicts_and_nothing_injects(tmp_path):
    page = write(tmp_path / "report.html", REPORT)
    assert oct(os.stat(page).st_mode & 0o777) == "0o600"
    raw = page.read_text()
    for outside in ("<script", "<img", "<link", "<iframe", "url(", "@import", "http:", "https:"):
        assert outside not in raw.lower().replace("&lt;", "<?"), outside  # nothing to load or run
    dom = Dom(dump_dom(page))

    assert not [(t, a) for t, a in dom.tags if t in ("script", "img", "link", "iframe")
                or any(k in ("src", "href") or k.startswith("on") for k in a)]
    body = next(a for t, a in dom.tags if t == "body")
    assert "data-pwned" not in body
    meta = [a for t, a in dom.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert meta and meta[0]["content"].startswith("default-src 'none'")

    assert dom.ids["summary"] == "outcomepasseddowntime (fence to unfence), s2.3fence LSN0/1234"
    labels = dom.svg_text["timeline"]
    assert [x for x in labels if x in ("fence", "drain", "replay", "unfence", "verify")] == [
        "fence", "drain", "replay", "unfence", "verify", "fence", "unfence"]  # rows, then markers
    assert {"0.200 s", "0.500 s", "1.500 s", "0.100 s", "pending"} <= set(labels)
    assert dom.ids["fence-marker"] == "fence" and dom.ids["unfence-marker"] == "unfence"
    # the fence marker stands where the fence phase ends and the drain begins
    lines = [a for t, a in dom.tags if t == "line"]
    fence_x, unfence_x = float(lines[0]["x1"]), float(lines[1]["x1"])
    fence, drain, *_, unfence = _rects(dom)
    assert abs(fence_x - (float(fence["x"]) + float(fence["width"]))) < 0.2
    assert abs(fence_x - float(drain["x"])) < 0.2
    assert abs(unfence_x - (float(unfence["x"]) + float(unfence["width"]))) < 0.2
    assert dom.table("phases") == [["fence", "done", "0.2"], ["drain", "done", "0.5"],
                                   ["replay", "done", "1.5"], ["unfence", "done", "0.1"],
                                   ["verify", "pending", ""]]

    assert dom.svg_text["counts"] == ["public.orders", "captured 5021", "applied 5011",
                                      HOSTILE, "captured 3", "applied 3"]
    assert dom.table("counts") == [["public.orders", "5000", "20", "1", "0", "4990", "20", "1"],
                                   [HOSTILE, "3", "0", "0", "0", "3", "0", "0"]]
    assert dom.table("conflicts") == [
        ["public.coupons", "1001", "0/16B3F28", "insert-exists", "", "keep target row"],
        ["public.t", "<img src=x onerror=alert(1)>", "0/1", "update-missing", "a</td><td>b", "skip"]]
    assert dom.table("kept") == [["public.sessions", "excluded from capture </table><script>x()</script>"]]
    shot = screenshot(page, tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_an_empty_report_still_renders():
    html = render({})
    assert "<h1>pgcarry cutover report</h1>" in html and "no phases ran" in html
    assert "no conflicts" in html and "no table replayed" in html


def _rows(rep: dict) -> list[list[str]]:  # type: ignore[type-arg]
    ops = ("insert", "update", "delete", "truncate")
    return [[t["table"]] + [str(t["captured"].get(o, 0)) for o in ops]
            + [str(t["applied"].get(o, 0)) for o in ops[:3]] for t in rep["tables"]]


def _conflicts(rep: dict) -> list[list[str]]:  # type: ignore[type-arg]
    return [[c["table"], ", ".join(map(str, c["key"])), c["lsn"], c["kind"], c["column"] or "",
             c["decision"]] for c in rep["conflicts"]]


def _samples(workdir) -> list:  # type: ignore[type-arg]
    log = SQLiteLog(workdir / "pgcarry-log.db")
    try:
        return log.get_state("wal_samples")["samples"]
    finally:
        log.close()


def test_rehearse_and_cutover_write_the_report(source_dsn, target_dsn, workdir, prepared):  # noqa: F811
    _both_sides(source_dsn, target_dsn)
    cli(workdir, "capture", "--until", "current")
    rehearsed = json.loads(cli(workdir, "rehearse", "--from", target_dsn, "--json",
                               "--report", "rehearse.html").stdout)
    dom = Dom(dump_dom(workdir / "rehearse.html"))
    assert dom.ids["summary"].startswith("outcomepassedexpected downtime, s")
    assert [p["phase"] for p in rehearsed["phases"]] == [
        "overwrite", "backup (masked values)", "unmask", "replay", "verify"]
    assert [x for x in dom.svg_text["timeline"] if not x.endswith(" s")] == [
        p["phase"] for p in rehearsed["phases"]]
    assert "fence-marker" not in dom.ids  # a rehearsal fences nothing
    assert rehearsed["tables"] and dom.table("counts") == _rows(rehearsed)
    assert dom.table("conflicts") == _conflicts(rehearsed) == [
        ["public.coupons", "1001", rehearsed["conflicts"][0]["lsn"], "insert-exists", "",
         rehearsed["conflicts"][0]["decision"]]]

    samples = _samples(workdir)
    assert len(samples) == 1  # `capture --until current` took one
    out = json.loads(cli(workdir, "cutover", "--from", target_dsn, "--yes", "--json",
                         "--report", "cutover.html").stdout)
    assert out["complete"]
    assert _samples(workdir) == samples  # the drain inside the fence opens no extra connection
    page = workdir / "cutover.html"
    assert oct(os.stat(page).st_mode & 0o777) == "0o600"
    dom = Dom(dump_dom(page))
    assert [x for x in dom.svg_text["timeline"] if not x.endswith(" s")] == PHASES + ["fence", "unfence"]
    assert dom.ids["fence-marker"] == "fence" and dom.ids["unfence-marker"] == "unfence"
    assert re.search(r"downtime \(fence to unfence\), s[\d.]+fence LSN[0-9A-F]+/[0-9A-F]+backup",
                     dom.ids["summary"]), dom.ids["summary"]
    assert out["tables"] == rehearsed["tables"] and dom.table("counts") == _rows(out)
    assert dom.table("conflicts") == _conflicts(out) == _conflicts(rehearsed)
    assert dom.table("phases") == [[p["phase"], "done", str(p["seconds"])] for p in out["phases"]]
