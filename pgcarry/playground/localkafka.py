"""LocalKafka: a throwaway single-node Apache Kafka (KRaft, broker+controller) run with the local JVM.

Its jars come from ``scripts/fetch-kafka.sh`` (cached outside the repository); it listens on free
loopback ports, keeps its data in its own temp folder, and can be stopped and started again on the
same ports and data (the outage tests do that).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from pgcarry.errors import PgcarryError
from pgcarry.playground.localpg import free_port

START_TIMEOUT = 180.0  # seconds: a cold JVM on 2 busy cores can be slow
STOP_TIMEOUT = 60.0
HEAP = "-Xmx512m"
READY_LINE = "Kafka Server started"

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


def cache_root() -> Path:
    env = os.environ.get("PGCARRY_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(env) if env else base / "pgcarry"


def kafka_libs() -> Path | None:
    """The newest fetched jar folder (``PGCARRY_KAFKA_LIBS`` wins), or None before the fetch."""
    env = os.environ.get("PGCARRY_KAFKA_LIBS")
    if env:
        return Path(env)
    done = [p.parent / "libs" for p in cache_root().glob("kafka-*/.complete")]
    return max(done, key=lambda p: _version_key(p.parent.name)) if done else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else 0 for x in name.removeprefix("kafka-").split("."))


def random_cluster_id() -> str:
    """Kafka's own form: 16 random bytes, URL-safe base64 without padding. It may start with
    '-', so it is passed as ``--cluster-id=ID``, never as a separate argument."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


class LocalKafka:
    def __init__(self, libs: Path | None = None) -> None:
        found = libs or kafka_libs()
        if found is None or not found.is_dir():
            raise PgcarryError(
                "the Apache Kafka jars are not fetched", hint="run `make kafka` (scripts/fetch-kafka.sh)"
            )
        self.libs = found
        self.root = Path(tempfile.mkdtemp(prefix="pgcarry-kafka-"))
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.controller_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.root / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(64 << 20),
        }
        conf = self.root / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.root / "log4j2.properties").write_text(_LOG4J)
        return conf

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            shutil.which("java") or "java", HEAP, "-Xms128m", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def _format(self, conf: Path) -> None:
        cmd = self._java("kafka.tools.StorageTool", "format", f"--cluster-id={random_cluster_id()}", "-c", str(conf))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT)
        if r.returncode != 0:
            raise PgcarryError(f"kafka storage format failed: {(r.stderr or r.stdout)[-2000:]}")
        self._formatted = True

    def start(self) -> LocalKafka:
        """Start the broker (formatting its storage the first time) and wait until it serves."""
        conf = self._write_config()
        if not self._formatted:
            self._format(conf)
        mark = self.logfile.stat().st_size if self.logfile.exists() else 0
        with self.logfile.open("ab") as out:
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(conf)), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._wait_ready(mark)
        return self

    def _wait_ready(self, mark: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PgcarryError(f"kafka exited with {self._proc.returncode}:\n{self.log_tail()}")
            with self.logfile.open("rb") as f:
                f.seek(mark)
                started = READY_LINE.encode() in f.read()
            if started and _accepts(self.port):
                return
            time.sleep(0.2)
        self.stop(kill=True)
        raise PgcarryError(f"kafka did not start in {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def log_tail(self, nbytes: int = 4000) -> str:
        if not self.logfile.exists():
            return "(no log)"
        data = self.logfile.read_bytes()[-nbytes:]
        return f"--- {self.logfile} (tail) ---\n" + data.decode(errors="replace")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (clean shutdown) or SIGKILL; its data stays for a restart."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def destroy(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
