"""The manifest: what T0 was (slot, consistent point, snapshot, source) and what each captured
relation looked like then (key, replica identity, columns, foreign keys, masked columns).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Column(BaseModel):
    name: str
    type: str
    not_null: bool = False
    generated: bool = False
    identity: bool = False


class ForeignKey(BaseModel):
    name: str
    columns: list[str]
    ref_table: str  # "schema.table"
    ref_columns: list[str]
    deferrable: bool = False


class TableInfo(BaseModel):
    schema_name: str
    name: str
    primary_key: list[str]
    replica_identity: str  # full | default | index | nothing
    identity_key: list[str] = Field(default_factory=list)  # REPLICA IDENTITY USING INDEX columns
    columns: list[Column]
    foreign_keys: list[ForeignKey] = Field(default_factory=list)
    masked_columns: list[str] = Field(default_factory=list)
    triggers: list[str] | None = None  # production's own triggers (None: a log from before they
    # were recorded)

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"


class Manifest(BaseModel):
    slot: str
    plugin: str = "wal2json"
    plugin_options: dict[str, str]
    consistent_point: str  # an Lsn in X/X form
    snapshot: str | None
    created_at: str  # ISO 8601, UTC
    system_identifier: str
    database: str
    tables: dict[str, TableInfo]  # keyed "schema.table"
    copy_target: str | None = None  # DSN of the copy, password removed

    def identity_keys(self) -> dict[str, list[str]]:
        """The key of each relation captured with REPLICA IDENTITY USING INDEX (its changes name
        no primary key)."""
        return {rel: t.identity_key for rel, t in self.tables.items() if t.identity_key}
