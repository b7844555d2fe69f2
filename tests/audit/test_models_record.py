"""Tables, append-only triggers, and recording events on the hot path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.events import canonical_bytes
from audit.models import (
    POSTGRES_APPEND_ONLY_DDL,
    AuditCheckpoint,
    AuditEventRow,
    AuditEventSubject,
    AuditGap,
    AuditLeaf,
    AuditNode,
    AuditSealState,
    install_append_only_triggers,
)
from audit.record import record_event
from tests.audit.helpers import SUBJECTS, make_event, record_many, seal_all


def test_record_event_adds_rows_without_committing(audit_engine: sa.Engine) -> None:
    event = make_event(1, subject_ids=SUBJECTS[:3])
    with Session(audit_engine) as session:
        record_event(session, event)
        row = session.execute(sa.select(AuditEventRow)).scalar_one()
        assert row.body.encode() == canonical_bytes(event)
        assert (row.event_id, row.kind, row.agency, row.client_id, row.purpose, row.decision,
                row.agreement, row.action, row.resource_type, row.status) == (
            event.event_id, "api.access", event.agency, event.client_id, event.purpose,
            "permit", "core-iom@3", "read", "subject", 200)
        assert row.time == event.time and row.time.tzinfo is not None
        subjects = session.execute(
            sa.select(AuditEventSubject.subject_id).where(AuditEventSubject.event_row_id == row.id)
        ).scalars().all()
        assert sorted(subjects) == sorted(SUBJECTS[:3])
        session.rollback()  # the caller decides; nothing was committed behind its back
    with Session(audit_engine) as session:
        assert session.execute(sa.select(sa.func.count()).select_from(AuditEventRow)).scalar() == 0


def test_record_event_round_trips(audit_session: Session) -> None:
    """An event with subjects is one statement on PostgreSQL (a round trip per statement
    there) and two on SQLite; an event without subjects is one INSERT on both."""
    record_event(audit_session, make_event(0))  # warm caches
    statements: list[tuple[str, bool]] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append((statement.split()[0], executemany))

    engine = audit_session.get_bind().engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        record_event(audit_session, make_event(1, subject_ids=SUBJECTS[:4]))
        record_event(audit_session, make_event(2, subject_ids=()))
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    if engine.dialect.name == "postgresql":
        assert statements == [("WITH", False), ("INSERT", False)]
    else:
        assert statements == [("INSERT", False), ("INSERT", True), ("INSERT", False)]


def test_times_read_back_as_aware_utc(audit_session: Session) -> None:
    local = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    record_event(audit_session, make_event(1, time=local))
    value = audit_session.execute(sa.select(AuditEventRow.time)).scalar_one()
    assert value == local and value.utcoffset() == timedelta(0)
    window = sa.select(sa.func.count()).where(
        AuditEventRow.time >= local - timedelta(microseconds=1),
        AuditEventRow.time < local + timedelta(microseconds=1),
    )
    assert audit_session.execute(window).scalar() == 1
    with pytest.raises(sa.exc.StatementError):
        audit_session.execute(sa.insert(AuditGap).values(event_row_id=1,
                                                         first_seen=datetime(2026, 1, 1)))


def test_append_only_ddl_covers_the_log_tables() -> None:
    ddl = "\n".join(POSTGRES_APPEND_ONLY_DDL)
    for table in ("audit_events", "audit_event_subjects", "audit_leaves", "audit_nodes",
                  "audit_checkpoints"):
        assert f"BEFORE UPDATE OR DELETE ON {table} " in ddl
    assert "ON audit_seal_state" not in ddl and "ON audit_gaps" not in ddl


def test_triggers_are_a_no_op_on_sqlite() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as connection:
        install_append_only_triggers(connection)  # nothing to run, nothing fails
        assert connection.exec_driver_sql(
            "select count(*) from sqlite_master where type = 'trigger'").scalar() == 0


def test_postgres_refuses_update_and_delete(audit_session: Session) -> None:
    if audit_session.get_bind().dialect.name != "postgresql":
        pytest.skip("append-only triggers are PostgreSQL-only")
    record_many(audit_session, 3)
    seal_all(audit_session)
    audit_session.flush()
    attempts = [
        sa.update(AuditEventRow).values(agency="EDITED"),
        sa.delete(AuditEventRow),
        sa.update(AuditEventSubject).values(subject_id=SUBJECTS[5]),
        sa.delete(AuditEventSubject),
        sa.update(AuditLeaf).values(leaf_hash=bytes(32)),
        sa.delete(AuditLeaf),
        sa.update(AuditNode).values(hash=bytes(32)),
        sa.delete(AuditNode),
        sa.update(AuditCheckpoint).values(note="x"),
        sa.delete(AuditCheckpoint),
        sa.text("TRUNCATE audit_leaves CASCADE"),
    ]
    for statement in attempts:
        with (
            pytest.raises(sa.exc.DBAPIError, match="append-only"),
            audit_session.begin_nested(),
        ):
            audit_session.execute(statement, execution_options={"synchronize_session": False})
    # The sealer's bookkeeping stays mutable.
    with audit_session.begin_nested():
        audit_session.execute(sa.update(AuditSealState).values(event_cursor=3))
        audit_session.execute(sa.insert(AuditGap).values(event_row_id=99,
                                                         first_seen=datetime.now(UTC)))
        audit_session.execute(sa.delete(AuditGap))
    rows = audit_session.execute(sa.select(AuditEventRow.body)).scalars().all()
    assert [json.loads(b)["agency"] for b in rows] == ["WMP", "PROBATION", "NACRO"]
