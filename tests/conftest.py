"""Fixtures: two session-wide PostgreSQL 15 clusters (source with wal_level=logical, target) and a
fresh database on each per test, dropped afterwards with its replication slots."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.clusters import start_cluster

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def source_cluster() -> Iterator:
    c = start_cluster("source")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def target_cluster() -> Iterator:
    c = start_cluster("target")
    yield c
    c.destroy()


def _drop(cluster, dbname: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (dbname,)
        ).fetchall():
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,)
            )
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(dbname)
            )
        )


@pytest.fixture
def source_dsn(source_cluster) -> Iterator[str]:
    """A fresh database on the source cluster."""
    name = f"src_{os.getpid()}_{next(_ids)}"
    dsn = source_cluster.createdb(name)
    yield dsn
    _drop(source_cluster, name)


@pytest.fixture
def target_dsn(target_cluster) -> Iterator[str]:
    """A fresh, empty database on the target cluster."""
    name = f"tgt_{os.getpid()}_{next(_ids)}"
    dsn = target_cluster.createdb(name)
    yield dsn
    _drop(target_cluster, name)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder for pgcarry.toml and the log."""
    return tmp_path
