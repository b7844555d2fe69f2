"""Database tables of the audit log, on their own metadata.

Why separate metadata: the gateway includes ``AuditBase.metadata`` in its migrations next
to its own, yet nothing here depends on the gateway. The event ``body`` (canonical JSON)
is the truth; the query columns copy parts of it for indexes, and ``audit.dbverify``
checks that they still match. Leaves get their ``seq`` from the sealer, never at insert,
because concurrent PostgreSQL transactions commit their ids out of order.

Level-0 nodes (the leaf hashes) live in ``audit_leaves``; ``audit_nodes`` holds levels 1
and up, so each sealed event costs about one leaf row and one node row.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, also on SQLite (which drops zones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("audit times must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuditBase(DeclarativeBase):
    """Own metadata, so the gateway can migrate it next to its own without coupling."""


class AuditEventRow(AuditBase):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    agency: Mapped[str | None] = mapped_column(sa.String(128))
    client_id: Mapped[str | None] = mapped_column(sa.String(128))
    purpose: Mapped[str | None] = mapped_column(sa.String(128))
    decision: Mapped[str] = mapped_column(sa.String(8))
    agreement: Mapped[str | None] = mapped_column(sa.String(128))
    action: Mapped[str | None] = mapped_column(sa.String(64))
    resource_type: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[int | None] = mapped_column(sa.Integer())
    body: Mapped[str] = mapped_column(sa.Text())

    # (column, id) pairs: a filter plus keyset pagination by id reads one index range. Only
    # for the columns auditors filter on (`audit.query`): every index is written per request.
    __table_args__ = tuple(
        sa.Index(f"ix_audit_events_{name}_id", name, "id")
        for name in ("time", "kind", "agency", "client_id", "purpose", "decision",
                     "agreement", "action")
    )


# The body fields that are copied into query columns (dbverify compares them).
QUERY_COLUMNS = ("event_id", "kind", "time", "agency", "client_id", "purpose", "decision",
                 "agreement", "action", "resource_type", "status")


class AuditEventSubject(AuditBase):
    __tablename__ = "audit_event_subjects"

    event_row_id: Mapped[int] = mapped_column(
        sa.BigInteger(), sa.ForeignKey("audit_events.id"), primary_key=True
    )
    subject_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)

    __table_args__ = (sa.Index("ix_audit_event_subjects_subject", "subject_id", "event_row_id"),)


class AuditLeaf(AuditBase):
    __tablename__ = "audit_leaves"

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=False)
    event_row_id: Mapped[int] = mapped_column(
        sa.BigInteger(), sa.ForeignKey("audit_events.id"), unique=True
    )
    leaf_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32))


class AuditNode(AuditBase):
    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(sa.SmallInteger(), primary_key=True, autoincrement=False)
    node_index: Mapped[int] = mapped_column(
        sa.BigInteger(), primary_key=True, autoincrement=False
    )
    hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32))

    __table_args__ = {"sqlite_with_rowid": False}


class AuditCheckpoint(AuditBase):
    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(sa.BigInteger(), primary_key=True, autoincrement=False)
    timestamp: Mapped[int] = mapped_column(sa.BigInteger(), unique=True)
    root_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    key_name: Mapped[str] = mapped_column(sa.String(255))
    key_id: Mapped[str] = mapped_column(sa.String(8))
    note: Mapped[str] = mapped_column(sa.Text())


class AuditSealState(AuditBase):
    """One row; locking it is what makes a single sealer run at a time."""

    __tablename__ = "audit_seal_state"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=False)
    event_cursor: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    tree_size: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    last_checkpoint_size: Mapped[int] = mapped_column(sa.BigInteger(), default=0)
    last_checkpoint_timestamp: Mapped[int | None] = mapped_column(sa.BigInteger())
    # Wall-clock time of the last signing (the timestamp above may run ahead of it).
    last_checkpoint_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditGap(AuditBase):
    """An event id missing between sealed ids: in flight, rolled back, or committed late."""

    __tablename__ = "audit_gaps"

    event_row_id: Mapped[int] = mapped_column(
        sa.BigInteger(), primary_key=True, autoincrement=False
    )
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())


APPEND_ONLY_TABLES = ("audit_events", "audit_event_subjects", "audit_leaves", "audit_nodes",
                      "audit_checkpoints")

POSTGRES_APPEND_ONLY_DDL: list[str] = [
    """
    CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    *(
        stmt
        for table in APPEND_ONLY_TABLES
        for stmt in (
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
        )
    ),
]


def install_append_only_triggers(connection: Connection) -> None:
    """Refuse UPDATE, DELETE and TRUNCATE on the log tables (PostgreSQL; no-op elsewhere).

    A safety net against mistakes and casual tampering; the Merkle tree and the signed
    checkpoints are what make tampering by a database superuser detectable.
    """
    if connection.dialect.name != "postgresql":
        return
    for statement in POSTGRES_APPEND_ONLY_DDL:
        connection.execute(sa.text(statement))

