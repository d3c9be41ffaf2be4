"""`pgcarry demo`: the whole job end to end on two throwaway local clusters (see cutover/demo.py).
Exits 0 only when the cutover's verify passed; the clusters are always removed."""

from __future__ import annotations

import argparse

NAME = "demo"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    return sub.add_parser(NAME, help="run start, capture and cutover on two throwaway local clusters")


def run(args: argparse.Namespace) -> int:
    """Run start, capture and cutover end to end on two throwaway local clusters."""
    from pgcarry.cutover.demo import run_demo

    return 0 if run_demo() else 5
