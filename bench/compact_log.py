"""Experiment for the next log format: what if capture stored each change pre-decoded?

Captures the same shop workload as bench/replay.py into the SQLite log, then converts every change
into a compact record (column set id + msgpack of the new and old values) as a capture daemon
would have to, and times, in this one process: that conversion (the cost capture would take on),
and reading + decoding the whole log both ways (what replay pays before folding). Prints sizes,
times and ratios. Run: .venv/bin/python bench/compact_log.py [--changes N] [--rounds N].
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay import _prepare, _read_floor  # noqa: E402  (bench/replay.py's workload)

from pgcarry.changelog.sqlite import SQLiteLog  # noqa: E402
from pgcarry.playground.localpg import LocalCluster  # noqa: E402
from pgcarry.replay import reader  # noqa: E402


def _convert(log: SQLiteLog, path: Path) -> float:
    """Decode every change and store it compactly; returns the seconds the conversion took."""
    encode, decode = msgspec.msgpack.Encoder().encode, reader.decode
    colsets: dict[tuple[str, str, tuple[str, ...]], int] = {}
    out = []
    t = time.perf_counter()
    for commit, lsn, action, schema, table, raw in log.raw_changes():
        d = decode(raw)
        names = tuple(c.name for c in (d.columns or d.identity))
        cs = colsets.setdefault((schema, table, names), len(colsets))
        out.append((commit, lsn, action, cs,
                    encode([[c.value for c in d.columns], [c.value for c in d.identity]])))
    took = time.perf_counter() - t
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE changes (commit_lsn INTEGER, lsn INTEGER, action TEXT, "
                   "colset INTEGER, img BLOB)")
        db.executemany("INSERT INTO changes VALUES (?, ?, ?, ?, ?)", out)
    return took


def _read_compact(path: Path) -> float:
    decode = msgspec.msgpack.Decoder().decode
    db = sqlite3.connect(path)
    t = time.perf_counter()
    with reader.no_gc():
        for *_, img in db.execute("SELECT * FROM changes ORDER BY rowid"):
            decode(img)
    took = time.perf_counter() - t
    db.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with LocalCluster("compact-src") as src, LocalCluster("compact-tgt") as tgt, \
            tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"preparing: shop schema, T0 copy, {args.changes} production changes, capture ...")
        _prepare(src, tgt, work, args.changes)
        log = SQLiteLog(work / "log.db", readonly=True)
        n = sum(1 for _ in log.raw_changes())
        convert = _convert(log, work / "compact.db")
        wal = min(_read_floor(log) for _ in range(args.rounds))
        compact = min(_read_compact(work / "compact.db") for _ in range(args.rounds))
        big, small = log.size_bytes(), (work / "compact.db").stat().st_size
        print(f"{n} changes; log {big / 1e6:.0f} MB as wal2json, {small / 1e6:.0f} MB compact "
              f"({big / small:.1f}x smaller)")
        print(f"read + decode (best of {args.rounds}): wal2json {wal:.2f} s, compact {compact:.2f} s "
              f"({wal / compact:.1f}x faster)")
        print(f"conversion capture would take on: {convert:.2f} s "
              f"({convert / n * 1e6:.1f} us per change)")
        log.close()


if __name__ == "__main__":
    main()
