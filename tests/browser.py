"""A real headless browser for the tests (Debian's chromium, installed by
scripts/install-system-deps.sh): the DOM it built from a page, and what its parser made of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip("chromium is not installed (run scripts/install-system-deps.sh as root)")
    return path


def dump_dom(page: Path, *extra: str) -> str:
    """The page's DOM after the browser loaded it (scripts, had any run, would show here)."""
    with tempfile.TemporaryDirectory(prefix="pgcarry-chromium-") as profile:
        proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, "--dump-dom",
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="pgcarry-chromium-") as profile:
        subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--window-size=1000,1400",
                        f"--screenshot={out}", page.resolve().as_uri()], capture_output=True, timeout=120,
                       check=True)
    return out


VOID = {"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Dom(HTMLParser):
    """What the browser serialised: every tag with its attributes, the text of each element with
    an id, the cell texts of each table's body rows (by the table's class), the <text>s of each
    SVG (by its id)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.svg_text: dict[str, list[str]] = {}
        self._open: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.feed(html)

    def _inside(self, tag: str) -> dict[str, str | None] | None:
        return next((a for t, a, _ in reversed(self._open) if t == tag), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "tr" and self._inside("tbody") is not None:
            self.rows.setdefault(self._inside("table").get("class") or "", []).append([])  # type: ignore[union-attr]
        if tag not in VOID:
            self._open.append((tag, a, []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            t, a, text = self._open.pop()
            body = "".join(text)
            if a.get("id"):
                self.ids[a["id"]] = body  # type: ignore[index]
            if t == "td" and self._inside("tbody") is not None:
                self.rows[self._inside("table").get("class") or ""][-1].append(body)  # type: ignore[union-attr]
            if t == "text":
                self.svg_text.setdefault(self._inside("svg").get("id") or "", []).append(body)  # type: ignore[union-attr]
            if t == tag:  # elements the serialiser left open inside it close with it
                break

    def handle_data(self, data: str) -> None:
        for _, _, text in self._open:  # an element's text is all the text inside it
            text.append(data)

    def table(self, cls: str) -> list[list[str]]:
        return self.rows.get(cls, [])
