"""The session settings under which every value's text is written and read: capture's replication
connection and every replay, verify and unmask connection to the target use them, so a cast
between timestamp types, a float's digits or a bytea's form never depend on a server's,
database's or role's defaults.
"""

from __future__ import annotations

SETTINGS = {
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "IntervalStyle": "postgres",
}


def startup_options() -> str:
    """The settings as libpq `options` (``-c name=value ...``), for connections that take them."""
    return " ".join(f"-c {k}={v}" for k, v in SETTINGS.items())
