"""DSN helpers: expand ``${ENV}`` references and strip passwords before anything is printed."""

from __future__ import annotations

import os
import re

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URI_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def expand_env(text: str) -> str:
    """Replace ``${NAME}`` with the environment variable NAME; a missing variable is an error."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise KeyError(name)
        return os.environ[name]

    return _ENV_REF.sub(repl, text)


def redact(text: str) -> str:
    """Remove passwords from a DSN (URI or key=value) or from any text that embeds one."""
    text = _URI_PASSWORD.sub(r"\1***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def safe_dsn(dsn: str) -> str:
    """A printable form of a DSN: host, port, user and database, never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return redact(dsn)
    params.pop("password", None)
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def with_options(dsn: str, **params: str) -> str:
    """The DSN with extra libpq parameters (for example ``dbname`` or ``options``)."""
    return make_conninfo(dsn, **params)
