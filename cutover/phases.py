"""The cutover as resumable phases: each is recorded in the log's state ("cutover") before and after
it runs; a re-run skips completed phases and redoes an interrupted one (each is idempotent or
atomic). Until the slot is dropped a failure unfences; afterwards the backup is the way back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from pgcarry import progress as prog
from pgcarry.capture.copy import run_tool
from pgcarry.capture.daemon import Capture, slot_position
from pgcarry.changelog.base import ChangeLog
from pgcarry.cutover import fence as fence_mod
from pgcarry.cutover import report_html, unmask
from pgcarry.cutover.overwrite import overwrite
from pgcarry.errors import LogError, PgcarryError, SlotError, VerifyError
from pgcarry.replay import pii, replay, sequences
from pgcarry.replay.sequences import Production
from pgcarry.replay.verify import verify
from pgcarry.schemas.config import Config
from pgcarry.schemas.dsn import safe_dsn
from pgcarry.schemas.lsn import Lsn

DRAIN_BUSY_WAIT = float(os.environ.get("PGCARRY_DRAIN_BUSY_WAIT", "30"))  # seconds the drain waits
# for a slot another process streams, before it gives up (and the fence is lifted)
# unmask before replay: masked keys must be production's again for the replay to find its rows
PHASES = ["fence", "drain", "backup", "drop-slot", "overwrite", "unmask", "replay", "verify", "unfence"]
STATE_KEY = "cutover"


class Cutover:
    def __init__(self, cfg: Config, log: ChangeLog, test_dsn: str, *, fence: str = "read-only",
                 say: Callable[[str], None] = lambda s: None, fail_before: str | None = None,
                 commands: tuple[str | None, str | None] = (None, None),
                 progress: prog.Progress = prog.NULL) -> None:
        self.cfg, self.log, self.test, self.fence_mode, self.say = cfg, log, test_dsn, fence, say
        self.progress = progress
        self.prod = fence_mod.writable(cfg.source.dsn)
        self.manifest = log.read_manifest()
        if self.manifest is None:
            raise LogError("the change log has no manifest", hint="run `pgcarry start` first")
        self.state: dict[str, Any] = log.get_state(STATE_KEY) or {"phases": {}}
        # before the fence: the salt, and (until the overwrite) keys the restore can match
        pii.refuse_unready(self.manifest, cfg, None if self.done("overwrite") else test_dsn)
        self.commands = commands
        self.fail_before = fail_before or os.environ.get("PGCARRY_CUTOVER_FAIL_BEFORE")

    # -- state -------------------------------------------------------------------------------
    def _save(self) -> None:
        self.log.set_state(STATE_KEY, self.state)

    def done(self, phase: str) -> bool:
        return self.state["phases"].get(phase, {}).get("status") == "done"

    def _phase(self, name: str, fn: Callable[[], Any]) -> None:
        if self.done(name):
            return
        if self.fail_before == name:
            raise PgcarryError(f"stopped before phase {name} (PGCARRY_CUTOVER_FAIL_BEFORE)")
        rec = self.state["phases"].setdefault(name, {})
        rec.update(status="running", started=time.time(), attempts=rec.get("attempts", 0) + 1)
        self._save()
        self.say(f"cutover: {name} ...")
        t0 = time.monotonic()
        detail = fn()
        rec.update(status="done", seconds=round(time.monotonic() - t0, 3), detail=detail)
        self._save()

    # -- phases ------------------------------------------------------------------------------
    def _fence(self) -> Any:
        if self.fence_mode == "none":
            saved: dict[str, Any] = {"mode": "none"}
        elif self.fence_mode == "cmd":
            saved = self.state["fence"] = {"mode": "cmd", "unfence_cmd": self.commands[1]}
            self._save()
            if self.commands[0]:
                fence_mod.run_cmd(self.commands[0], "fence")
        else:
            saved = self.state.get("fence") or fence_mod.remember(self.prod)
            self.state["fence"] = saved
            self._save()  # the previous settings are safe before anything changes
            saved["terminated"] = fence_mod.apply(self.prod, saved)
        self.state.setdefault("fenced_at", time.time())
        return {"mode": saved["mode"], "terminated": saved.get("terminated", 0)}

    def _drain(self) -> Any:
        lost = self.log.get_state("slot_lost")  # only with --allow-incomplete (the CLI refuses)
        if lost:
            return {"skipped": f"slot lost ({lost['reason']}); the log ends at {lost.get('last_lsn')}"}
        if not self.state.get("fence_lsn"):
            self.state["fence_lsn"] = str(slot_position(self.cfg.source.dsn, self.cfg.source.slot)[1])
            self._save()
        until = Lsn.parse(self.state["fence_lsn"])
        cap = Capture(self.cfg.source.dsn, self.cfg.source.slot, self.log, self.manifest,
                      progress=self.progress, wal_samples=False)  # inside the fence: nothing extra
        prog = cap.run(until=until, busy_timeout=DRAIN_BUSY_WAIT)
        # behind the fence, before the overwrite replaces them: production's sequence positions
        self.state["sequences"] = sequences.read(self.prod).as_state()
        return {"until": str(until), "transactions": prog.transactions, "changes": prog.changes}

    def _backup(self) -> Any:
        folder = Path(self.cfg.log.path).resolve().parent / "pgcarry-backups"
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = folder / f"{self.manifest.database}-{stamp}.dump"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        run_tool("pg_dump", ["-Fc", "--no-owner", "-f", str(path)], self.prod)
        os.chmod(path, 0o600)
        saved = unmask.save(self.prod, self.manifest, self.cfg, self.log)
        self.state["backup"] = str(path)
        return {"path": str(path), "bytes": path.stat().st_size, "masked_rows_kept": saved}

    def _drop_slot(self) -> Any:
        with psycopg.connect(self.prod, autocommit=True) as conn:
            row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                               (self.cfg.source.slot,)).fetchone()
            if row is None:
                return {"dropped": False}
            if row[0] is not None:
                raise SlotError(f"replication slot {self.cfg.source.slot!r} is in use by pid {row[0]}")
            conn.execute("SELECT pg_drop_replication_slot(%s)", (self.cfg.source.slot,))
        return {"dropped": True}

    def _overwrite(self) -> Any:
        schemas = sorted({t.schema_name for t in self.manifest.tables.values()})
        overwrite(self.prod, self.test, schemas, self.cfg.copy_.jobs)
        return {"schemas": schemas, "from": safe_dsn(self.test)}

    def _replay(self) -> Any:
        rep = replay(self.cfg, self.log, self.prod, progress=self.progress,
                     production=lambda _names: Production.from_state(self.state.get("sequences")))
        d = rep.as_dict()
        return {"status": rep.status, "conflicts": (d.get("conflicts") or [])[:200],
                "applied": d.get("applied"), "tables": report_html.tables(d)}

    def _unmask(self) -> Any:
        return {"restored": unmask.restore(self.prod, self.manifest, self.cfg)}

    def _verify(self) -> Any:
        checks = verify(self.cfg, self.log, self.prod)  # with the pii guard: the values are kept
        failed = [f"{c.name} {c.table}: {c.detail}" for c in checks if not c.ok]
        self.state["verify"] = {"checks": len(checks), "failed": failed}
        if failed:
            raise VerifyError(f"verify failed ({len(failed)} checks); production stays fenced",
                              hint=self.restore_hint())
        return {"checks": len(checks)}

    def _unfence(self) -> Any:
        fence_mod.unfence(self.prod, self.state.get("fence") or {})
        unmask.discard(self.prod)
        self.state["unfenced_at"] = time.time()
        return {}

    def restore_hint(self) -> str:
        b = self.state.get("backup")
        if not b:
            return "production was not changed"
        return (f"restore production from the backup with: pg_restore --clean --if-exists "
                f"--no-owner -d '{safe_dsn(self.cfg.source.dsn)}' {b}")

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        steps = {"fence": self._fence, "drain": self._drain, "backup": self._backup,
                 "drop-slot": self._drop_slot, "overwrite": self._overwrite, "replay": self._replay,
                 "unmask": self._unmask, "verify": self._verify, "unfence": self._unfence}
        self.state.setdefault("test", safe_dsn(self.test))
        self.state.setdefault("fence_mode", self.fence_mode)
        self.fence_mode = self.state["fence_mode"]
        try:
            for name in PHASES:
                self._phase(name, steps[name])
        except BaseException as e:
            if not self.done("drop-slot") and "fence" in self.state and not isinstance(e, KeyboardInterrupt):
                self._abort()
            self.state["error"] = str(e)
            self._save()
            raise
        self.state.pop("error", None)
        self._save()
        return self.report()

    def _abort(self) -> None:
        """Before the slot is dropped a failure lifts the fence; capture simply continues."""
        fence_mod.unfence(self.prod, self.state["fence"])
        self.say("cutover: failed before the slot was dropped; production unfenced, nothing changed")
        self.state = {"phases": {}, "aborted_at": time.time()}

    def report(self) -> dict[str, Any]:
        st = self.state
        phases = [{"phase": p, "status": st["phases"].get(p, {}).get("status", "pending"),
                   "started": st["phases"].get(p, {}).get("started"),
                   "seconds": st["phases"].get(p, {}).get("seconds"),
                   "detail": st["phases"].get(p, {}).get("detail")} for p in PHASES]
        replayed = st["phases"].get("replay", {}).get("detail") or {}
        down = None
        if st.get("fenced_at"):
            down = round((st.get("unfenced_at") or time.time()) - st["fenced_at"], 3)
        return {"complete": all(p["status"] == "done" for p in phases), "phases": phases,
                "downtime_seconds": down, "backup": st.get("backup"), "fence_lsn": st.get("fence_lsn"),
                "verify": st.get("verify"), "restore": self.restore_hint() if st.get("backup") else None,
                "fenced_at": st.get("fenced_at"), "unfenced_at": st.get("unfenced_at"),
                "tables": replayed.get("tables") or [], "conflicts": replayed.get("conflicts") or []}
