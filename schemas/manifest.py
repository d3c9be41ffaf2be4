"""The manifest: what T0 was (slot, consistent point, snapshot, source) and what each captured
relation looked like then (key, replica identity, columns, foreign keys, masked columns).
"""

from __future__ import annotations

from typing import Any

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


class MaskRecord(BaseModel):
    """A masked column of the test copy: its rule's kind and options (never the salt), so a later
    run can compute the same mask, and how the cutover matches it back to production's values."""

    column: str
    kind: str  # value | null | regex | hash | email
    options: dict[str, Any] = Field(default_factory=dict)
    via: list[str] | None = None  # ["schema.table", "column"] whose rule it follows by foreign key
    linked: bool = False  # a key or foreign-key column: restored by mapping masked values to real ones


class TableInfo(BaseModel):
    schema_name: str
    name: str
    primary_key: list[str]
    replica_identity: str  # full | default | index | nothing
    identity_key: list[str] = Field(default_factory=list)  # REPLICA IDENTITY USING INDEX columns
    columns: list[Column]
    foreign_keys: list[ForeignKey] = Field(default_factory=list)
    masked_columns: list[str] = Field(default_factory=list)
    # a partitioned table: every partition below it at T0, [schema, name] (leaves and others);
    # their changes are captured, counted and replayed under this relation
    partitioned: bool = False
    partitions: list[list[str]] = Field(default_factory=list)
    masks: list[MaskRecord] = Field(default_factory=list)
    mask_key: list[str] = Field(default_factory=list)  # what a masked row is matched on ([]: all of it)
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
    mask_salt_check: str | None = None  # capture.mask.salt_check(): the same salt later? (not the salt)

    def identity_keys(self) -> dict[str, list[str]]:
        """The key of each relation captured with REPLICA IDENTITY USING INDEX (its changes name
        no primary key)."""
        return {rel: t.identity_key for rel, t in self.tables.items() if t.identity_key}
