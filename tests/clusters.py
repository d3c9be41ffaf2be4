"""Where test clusters come from: local binaries (the default, and CI's path) or testcontainers.

testcontainers is used where a Docker engine answers or PGCARRY_TEST_DOCKER=1; both give objects
with ``dsn(dbname)``, ``createdb(name)``, ``restart(mode)`` and ``destroy()``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pgcarry.playground.localpg import LocalCluster


def docker_wanted() -> bool:
    if os.environ.get("PGCARRY_TEST_DOCKER") == "1":
        return True
    if os.environ.get("PGCARRY_TEST_DOCKER") == "0":
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ContainerCluster:
    """PostgreSQL 15 + wal2json in a container (tests/docker/Dockerfile.postgres)."""

    def __init__(self, name: str) -> None:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.image import DockerImage
        from testcontainers.core.waiting_utils import wait_for_logs

        image = DockerImage(path=str(Path(__file__).parent / "docker"), tag="pgcarry-test-pg:15")
        image.build()
        self._c = (
            DockerContainer(str(image))
            .with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
            .with_exposed_ports(5432)
            .with_command("postgres -c wal_level=logical -c max_replication_slots=16 -c fsync=off")
        )
        self._c.start()
        wait_for_logs(self._c, "database system is ready to accept connections", timeout=60)
        self.port = int(self._c.get_exposed_port(5432))
        self.name = name

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        host = self._c.get_container_host_ip()
        return f"host={host} port={self.port} user={user} dbname={dbname}"

    def createdb(self, dbname: str) -> str:
        return LocalCluster.createdb(self, dbname)  # type: ignore[arg-type]

    def restart(self, mode: str = "fast") -> None:
        self._c.get_wrapped_container().restart()

    def destroy(self) -> None:
        self._c.stop()


def start_cluster(name: str, settings: dict[str, str] | None = None) -> LocalCluster | ContainerCluster:
    if docker_wanted() and not settings:
        return ContainerCluster(name)
    return LocalCluster(name, settings).start()
