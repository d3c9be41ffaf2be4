"""The error hierarchy: every failure a user can act on is a PgcarryError with context and a hint.

The CLI prints one line (``error: <message> [context] (hint: ...)``) and an exit code; the traceback
only with ``--traceback``.
"""

from __future__ import annotations

from typing import Any


class PgcarryError(Exception):
    """A failure with context (table, key, LSN ...) and a hint on what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        text = self.message
        if self.context:
            text += " [" + ", ".join(f"{k}={v}" for k, v in self.context.items()) + "]"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ConfigError(PgcarryError):
    """The config file or flags are wrong; nothing was done."""

    exit_code = 2


class PreflightError(PgcarryError):
    """The source is not ready for capture; nothing was created."""

    exit_code = 2


class SlotError(PgcarryError):
    """The replication slot is missing, lost, or already exists."""

    exit_code = 2


class LogError(PgcarryError):
    """The change log is missing, damaged, locked, or belongs to another slot/source."""

    exit_code = 3


class LogIncompleteError(LogError):
    """The log cannot be trusted to hold every change (for example the slot was invalidated)."""


class CaptureStoppedError(PgcarryError):
    """Capture cannot stream past a change (too large for wal2json): no retry can cure it."""

    exit_code = 7


class ReplayError(PgcarryError):
    """Replay stopped; the target transaction was rolled back and nothing changed."""

    exit_code = 4


class ConflictError(ReplayError):
    """A conflict whose policy is `fail`."""


class VerifyError(PgcarryError):
    """Verification failed."""

    exit_code = 5


class LogUnavailableError(LogError):
    """The log cannot take writes right now (broker down, disk full); capture waits and retries."""


class LogFullError(LogUnavailableError):
    """A write to the log failed (disk full) and was rolled back to the last durable position:
    capture re-reads the stream from the slot once the log takes writes again."""


class ChangeTooLargeError(LogError):
    """One change is larger than the log can store (Kafka's max.message.bytes): capture stops."""


class WriterFencedError(LogError):
    """Another writer took the change log over: this one stops without confirming anything more."""
