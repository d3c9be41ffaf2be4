"""pgcarry.toml: the typed configuration every verb reads (flags override, DSNs may use ${ENV}).

Keys are kebab-case in TOML (``insert-exists``); loading never reads anything but the given file,
the environment variables a DSN or the salt names, and PGCARRY_MASK_SALT.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator,
)

from pgcarry.errors import ConfigError
from pgcarry.schemas import patterns
from pgcarry.schemas.dsn import expand_env, redact

DEFAULT_CONFIG = "pgcarry.toml"
DEFAULT_SLOT = "pgcarry"
DEFAULT_LOG_PATH = "pgcarry-log.db"
DEFAULT_MASK_VALUE = "MASKED"
DEFAULT_SLOT_WARNING_HOURS = 6.0  # `status` exits 6 when the slot's estimated life is shorter
SALT_ENV = "PGCARRY_MASK_SALT"
MIN_SALT_LENGTH = 16

ColumnPolicy = Literal["source-wins", "target-wins", "delta"]
InsertExists = Literal["fail", "source-wins", "target-wins"]
UpdateMissing = Literal["fail", "skip", "reinsert"]
DeleteMissing = Literal["skip", "fail"]
TruncatePolicy = Literal["fail", "apply"]

_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True)


def _env(value: str) -> str:
    try:
        return expand_env(value)
    except KeyError as e:
        raise ValueError(f"environment variable {e.args[0]} is not set") from None


def _dsn(value: str) -> str:
    dsn = _env(value)
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ValueError(f"not a libpq connection string or URI: {redact(str(e).strip())}") from None
    ports = str(params.get("port") or "").split(",")
    if any(p and not (p.isdigit() and 0 < int(p) < 65536) for p in ports):
        raise ValueError("port must be a number from 1 to 65535")
    return dsn


class SourceConfig(_Model):
    dsn: str
    slot: str = DEFAULT_SLOT

    _expand = field_validator("dsn")(classmethod(lambda cls, v: _dsn(v)))

    @field_validator("slot")
    @classmethod
    def _slot_name(cls, v: str) -> str:
        if not _SLOT_RE.match(v):
            raise ValueError("slot names use lower-case letters, digits and _ (at most 63)")
        return v


class CaptureConfig(_Model):
    tables: list[str] = Field(default_factory=lambda: ["public.*"])
    exclude: list[str] = Field(default_factory=list)
    # per relation: "default" opts out of REPLICA IDENTITY FULL (every column counts as changed)
    identity: dict[str, Literal["full", "default"]] = Field(default_factory=dict)
    metrics_port: int | None = None
    # wal2json before 2.6 sends NaN/±Infinity as null: capture anyway, knowingly (README, preflight)
    accept_nan_as_null: bool = False
    slot_warning_hours: float = Field(default=DEFAULT_SLOT_WARNING_HOURS, ge=0)

    @field_validator("tables", "exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            patterns.parse(p)  # a bad pattern is a one-line config error
        return v

    def wants(self, schema: str, table: str) -> bool:
        """True when the relation matches a `tables` pattern and no `exclude` pattern
        (schemas/patterns.py: globs, or double-quoted exact names)."""
        def hit(pats: list[str]) -> bool:
            return any(patterns.parse(p).matches(schema, table) for p in pats)
        return hit(self.tables) and not hit(self.exclude)


def survives_one_broker_loss(replication: int, min_insync: int) -> bool:
    """acks=all confirms a record only once min.insync replicas hold it: with RF >= 3 and
    min.insync >= 2 (or min.insync = RF >= 2) a confirmed record outlives any one broker."""
    return min_insync <= replication and (
        (replication >= 3 and min_insync >= 2) or (replication >= 2 and min_insync == replication))


class KafkaConfig(_Model):
    bootstrap_servers: str
    topic: str | None = None  # default: pgcarry-<slot>
    state_topic: str | None = None  # default: <topic>-state (compacted: manifest, cutover state)
    create_topic: bool = True
    # a one-broker cluster loses acknowledged records in a crash: allowed only when said so
    single_broker: bool = False
    replication_factor: int | None = Field(default=None, ge=1)  # default 3 (1 with single-broker)
    min_insync_replicas: int | None = Field(default=None, ge=1)  # default 2 (1 with single-broker)
    compression: Literal["zstd", "lz4", "gzip", "none"] = "zstd"
    security: dict[str, Any] = Field(default_factory=dict)  # aiokafka client options, ${ENV} expanded

    @field_validator("security")
    @classmethod
    def _expand_security(cls, v: dict[str, Any]) -> dict[str, Any]:
        return {k: _env(x) if isinstance(x, str) else x for k, x in v.items()}

    @model_validator(mode="after")
    def _durable_replication(self) -> KafkaConfig:
        if self.replication_factor is None:
            self.replication_factor = 1 if self.single_broker else 3
        if self.min_insync_replicas is None:
            self.min_insync_replicas = min(2, self.replication_factor)
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min-insync-replicas ({self.min_insync_replicas}) exceeds "
                             f"replication-factor ({self.replication_factor}): no write could succeed")
        if not self.single_broker and not survives_one_broker_loss(
                self.replication_factor, self.min_insync_replicas):
            raise ValueError(
                f"replication-factor {self.replication_factor} with min-insync-replicas "
                f"{self.min_insync_replicas} loses acknowledged changes when one broker fails; use "
                "3 and 2 (or say single-broker = true for a throwaway one-broker setup)")
        return self


class LogConfig(_Model):
    backend: Literal["sqlite", "kafka"] = "sqlite"
    path: Path = Path(DEFAULT_LOG_PATH)
    kafka: KafkaConfig | None = None

    @model_validator(mode="after")
    def _kafka_needs_settings(self) -> LogConfig:
        if self.backend == "kafka" and self.kafka is None:
            raise ValueError("backend = \"kafka\" needs a [log.kafka] section with bootstrap-servers")
        return self


class CopyConfig(_Model):
    to: str | None = None
    jobs: int = Field(default=2, ge=1, le=64)

    _expand = field_validator("to")(classmethod(lambda cls, v: None if v is None else _dsn(v)))


MaskKind = Literal["value", "null", "regex", "hash", "email"]
# the options each kind takes, with their defaults (None: required)
MASK_OPTIONS: dict[str, dict[str, Any]] = {
    "value": {"value": DEFAULT_MASK_VALUE},
    "null": {},
    "regex": {"regex": None, "replace": None, "flags": "", "unique": False, "length": 12},
    "hash": {"prefix": "", "suffix": "", "length": 32},
    "email": {"length": 16, "domain": "example.test", "keep-domain": False},
}
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


class MaskRule(_Model):
    """Mask one column of the test copy. `kind` defaults to "regex" when `regex` is given, else
    "value" (the constant `value`, "MASKED" by default); see README.md, [[mask]]."""

    table: str
    column: str
    kind: MaskKind | None = None
    value: str | None = None
    regex: str | None = None
    replace: str | None = None
    flags: str | None = Field(default=None, pattern="^[gi]*$")  # regexp_replace's: g (every match), i
    unique: bool | None = None
    prefix: str | None = None
    suffix: str | None = None
    length: int | None = Field(default=None, ge=4, le=64)
    domain: str | None = None
    keep_domain: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MaskRule:
        if self.kind is None:
            self.kind = "regex" if self.regex is not None or self.replace is not None else "value"
        takes = MASK_OPTIONS[self.kind]
        given = {_kebab(k): v for k, v in self.model_dump(exclude={"table", "column", "kind"}).items()
                 if v is not None}
        problems = [f"`{k}` does not apply to kind \"{self.kind}\" (it takes: "
                    f"{', '.join(f'`{o}`' for o in takes) or 'no options'})" for k in given if k not in takes]
        problems += [f"kind \"{self.kind}\" needs `{k}`" for k, d in takes.items() if d is None and k not in given]
        if self.kind == "regex" and self.length is not None and not self.unique:
            problems.append("`length` is the digest `unique = true` appends: it needs `unique = true`")
        if self.kind in ("hash", "email") and (self.length or 32) < 8:
            problems.append("a digest shorter than 8 hex characters is not a mask")
        if self.domain is not None and not _DOMAIN_RE.match(self.domain):
            problems.append("`domain` must be a domain name such as example.test")
        if self.domain is not None and self.keep_domain:
            problems.append("give either `domain` or `keep-domain = true`, not both")
        if problems:
            raise ValueError("\n".join(problems))
        if self.kind == "value" and self.value is None:
            self.value = DEFAULT_MASK_VALUE
        return self

    @property
    def relation(self) -> str:
        """The rule's table as "schema.table" (no schema: public)."""
        return self.table if "." in self.table else f"public.{self.table}"

    @property
    def options(self) -> dict[str, Any]:
        """The kind's options with their defaults filled in: what makes two rules the same mask."""
        given = {_kebab(k): v for k, v in self.model_dump(exclude={"table", "column", "kind"}).items()}
        return {k: given[k] if given.get(k) is not None else d for k, d in MASK_OPTIONS[str(self.kind)].items()}

    @property
    def needs_salt(self) -> bool:
        return self.kind in ("hash", "email") or (self.kind == "regex" and bool(self.unique))


class MaskingConfig(_Model):
    # ${ENV} expanded; without it PGCARRY_MASK_SALT is read. Never printed, logged or stored.
    salt: SecretStr | None = None

    @field_validator("salt", mode="before")
    @classmethod
    def _expand_salt(cls, v: Any) -> Any:
        return _env(v) if isinstance(v, str) else v


class TablePolicy(_Model):
    columns: dict[str, ColumnPolicy] = Field(default_factory=dict)
    insert_exists: InsertExists | None = None
    update_missing: UpdateMissing | None = None
    delete_missing: DeleteMissing | None = None
    truncate: TruncatePolicy | None = None
    rename_columns: dict[str, str] = Field(default_factory=dict)  # captured name -> target name
    ignore_columns: list[str] = Field(default_factory=list)
    rename_to: str | None = None  # "schema.table" in the target
    ignore: bool = False
    fire_triggers: list[str] = Field(default_factory=list)  # target triggers to fire during replay


class ReplayConfig(_Model):
    mode: Literal["net", "txn"] = "net"
    column: ColumnPolicy = "source-wins"
    insert_exists: InsertExists = "fail"
    update_missing: UpdateMissing = "fail"
    delete_missing: DeleteMissing = "skip"
    truncate: TruncatePolicy = "fail"
    tables: dict[str, TablePolicy] = Field(default_factory=dict)

    def table(self, relation: str) -> TablePolicy:
        return self.tables.get(relation) or TablePolicy()


class Assertion(_Model):
    name: str
    sql: str


class VerifyConfig(_Model):
    assertions: list[Assertion] = Field(default_factory=list, alias="assert")


class Config(_Model):
    source: SourceConfig
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    copy_: CopyConfig = Field(default_factory=CopyConfig, alias="copy")
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    mask: list[MaskRule] = Field(default_factory=list)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)

    @model_validator(mode="after")
    def _masks(self) -> Config:
        if self.masking.salt is None and os.environ.get(SALT_ENV):
            self.masking.salt = SecretStr(os.environ[SALT_ENV])
        problems, seen = [], {}
        for i, m in enumerate(self.mask):
            where = f"{m.relation}.{m.column}"
            if where in seen:
                problems.append(f"mask.{i}: {where} has a rule already (mask.{seen[where]})")
            seen.setdefault(where, i)
        needs = [f"mask.{i} ({m.relation}.{m.column}, kind {m.kind})" for i, m in enumerate(self.mask)
                 if m.needs_salt]
        salt = self.masking.salt
        if needs and salt is None:
            problems.append(f"masking.salt: {needs[0]} needs a salt: export {SALT_ENV}=\"$(openssl rand "
                            f"-hex 16)\" (keep it for the cutover) or set [masking] salt = \"${{VAR}}\"")
        elif salt is not None and len(salt.get_secret_value()) < MIN_SALT_LENGTH:
            problems.append(f"masking.salt: use at least {MIN_SALT_LENGTH} characters "
                            "(e.g. openssl rand -hex 16)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def salt(self) -> str | None:
        """The masking salt (never print it)."""
        return self.masking.salt.get_secret_value() if self.masking.salt else None


def _problems(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        for line in msg.splitlines():  # a validator may name several problems, one per line
            lines.append(f"{key}: {line}" if e["loc"] else line)  # top level: the line names its key
    return lines


def parse(data: dict[str, Any], *, origin: str = DEFAULT_CONFIG, base: Path | None = None) -> Config:
    """Validate a config mapping; relative log paths are taken from `base` (the file's folder)."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        problems = _problems(e)
        raise ConfigError(f"{origin}: " + f"\n{origin}: ".join(problems)) from None
    if base is not None and not cfg.log.path.is_absolute():
        cfg.log.path = base / cfg.log.path
    return cfg


def read_toml(path: Path) -> dict[str, Any]:
    """The raw mapping of a TOML file, or a ConfigError that says what is wrong with it."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file", hint="run `pgcarry init --source DSN` or pass --config"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge flag overrides (None means "not given") into the file's mapping."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = merge({}, value)
        else:
            out[key] = value
    return out
