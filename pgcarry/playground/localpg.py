"""LocalCluster: a throwaway PostgreSQL cluster from the local binaries, for tests and the demo.

It listens on 127.0.0.1 at a free port with its socket in its own temp folder, trusts local
connections, and runs as the ``postgres`` user when we are root (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from pgcarry.pgtools import pg_tool

DEFAULT_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_connections": "100",
    "fsync": "off",  # throwaway clusters: the durability under test is pgcarry's, not theirs
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "timezone": "UTC",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


class LocalCluster:
    def __init__(self, name: str = "pg", settings: dict[str, str] | None = None) -> None:
        self.name = name
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.root = Path(tempfile.mkdtemp(prefix=f"pgcarry-{name}-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.user = _run_as()
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, cwd=self.root)

    def init(self) -> LocalCluster:
        self._cmd(
            pg_tool("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        conf = {
            **self.settings,
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
        }
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")
        return self

    def start(self) -> LocalCluster:
        if not self.data.exists():
            self.init()
        self._cmd(pg_tool("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._cmd(pg_tool("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def reconfigure(self, **settings: str) -> None:
        """Append settings to postgresql.conf (takes effect on restart or reload)."""
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"

    def createdb(self, dbname: str) -> str:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return self.dsn(dbname)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
