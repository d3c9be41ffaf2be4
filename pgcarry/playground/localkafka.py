"""LocalKafka: a throwaway Apache Kafka cluster (KRaft, each node broker+controller) run with the local JVM.

One node by default, or N (a three-node cluster keeps its quorum and its in-sync replicas when one
node dies). Its jars come from ``scripts/fetch-kafka.sh`` (cached outside the repository); it
listens on free loopback ports, keeps its data in its own temp folder, and a node can be stopped
(or killed) and started again on the same ports and data (the outage tests do that).
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
NODE_HEAP = "-Xmx256m"  # each node of a cluster
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
    def __init__(self, libs: Path | None = None, nodes: int = 1) -> None:
        found = libs or kafka_libs()
        if found is None or not found.is_dir():
            raise PgcarryError(
                "the Apache Kafka jars are not fetched", hint="run `make kafka` (scripts/fetch-kafka.sh)"
            )
        self.libs = found
        self.root = Path(tempfile.mkdtemp(prefix="pgcarry-kafka-"))
        self.nodes = nodes
        self.ports = [free_port() for _ in range(nodes)]
        self.controller_ports = [free_port() for _ in range(nodes)]
        self.heap = HEAP if nodes == 1 else NODE_HEAP
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._formatted = False

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def logfile(self) -> Path:
        return self._logfile(0)

    def _logfile(self, i: int) -> Path:
        return self.root / ("server.log" if i == 0 else f"server-{i + 1}.log")

    def data_dir(self, i: int = 0) -> Path:
        return self.root / ("data" if i == 0 else f"data-{i + 1}")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _write_config(self, i: int) -> Path:
        port, cport, rf = self.ports[i], self.controller_ports[i], str(min(3, self.nodes))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(i + 1),
            "controller.quorum.voters": ",".join(
                f"{n + 1}@127.0.0.1:{c}" for n, c in enumerate(self.controller_ports)),
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir(i)),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(64 << 20),
            "replica.fetch.max.bytes": str(64 << 20),
            "replica.lag.time.max.ms": "10000",  # a dead follower leaves the ISR after 10 s
        }
        conf = self.root / f"server-{i + 1}.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.root / "log4j2.properties").write_text(_LOG4J)
        return conf

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            shutil.which("java") or "java", self.heap, "-Xms64m", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def _format(self, confs: list[Path]) -> None:
        cluster = random_cluster_id()
        formats = [subprocess.Popen(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster}", "-c", str(c)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in confs]
        for p in formats:
            out, _ = p.communicate(timeout=START_TIMEOUT)
            if p.returncode != 0:
                raise PgcarryError(f"kafka storage format failed: {out[-2000:]}")
        self._formatted = True

    def start(self) -> LocalKafka:
        """Start every node (formatting their storage the first time) and wait until they serve."""
        confs = [self._write_config(i) for i in range(self.nodes)]
        if not self._formatted:
            self._format(confs)
        marks = [self._launch(i, confs[i]) for i in range(self.nodes)]
        for i, mark in enumerate(marks):
            self._wait_ready(i, mark)
        return self

    def start_node(self, i: int) -> None:
        self._wait_ready(i, self._launch(i, self._write_config(i)))

    def _launch(self, i: int, conf: Path) -> int:
        log = self._logfile(i)
        mark = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self._procs[i] = subprocess.Popen(
                self._java("kafka.Kafka", str(conf)), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return mark

    def _wait_ready(self, i: int, mark: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        proc = self._procs[i]
        assert proc is not None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PgcarryError(f"kafka node {i + 1} exited with {proc.returncode}:\n{self.log_tail(i)}")
            with self._logfile(i).open("rb") as f:
                f.seek(mark)
                started = READY_LINE.encode() in f.read()
            if started and _accepts(self.ports[i]):
                return
            time.sleep(0.2)
        self.stop(kill=True)
        raise PgcarryError(f"kafka did not start in {START_TIMEOUT:.0f}s:\n{self.log_tail(i)}")

    def log_tail(self, i: int = 0, nbytes: int = 4000) -> str:
        log = self._logfile(i)
        if not log.exists():
            return "(no log)"
        data = log.read_bytes()[-nbytes:]
        return f"--- {log} (tail) ---\n" + data.decode(errors="replace")

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in self._procs)

    def stop(self, *, kill: bool = False) -> None:
        """Stop every node: SIGTERM (clean shutdown) or SIGKILL; the data stays for a restart."""
        for i in range(self.nodes):
            self.stop_node(i, kill=kill)

    def stop_node(self, i: int, *, kill: bool = False) -> None:
        proc, self._procs[i] = self._procs[i], None
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
