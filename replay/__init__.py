"""Replay: read the change log → plan (fold, order by foreign keys, resolve conflicts) → apply →
verify. ``replay()`` and ``verify()`` are the verbs, callable from code with the config first."""

from pgcarry.replay.run import Report, replay

__all__ = ["Report", "replay"]
