"""A read request reads outside a transaction and opens one only for its audit event
(`gateway.db.begin_read_phase`): on SQLite workers then do not queue behind each other's
reads for the write lock; on PostgreSQL the event is one statement and needs no BEGIN/COMMIT.

These run against the session's real database, not inside the per-test transaction: the
point is which transactions the request itself opens. Their audit events are committed."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from audit.models import AuditEventRow
from gateway.db import (
    begin_read_phase,
    end_read_phase,
    insert_ignoring_duplicates,
    write_after_read,
)
from gateway.models import PseudonymIndex, Subject
from tests.sql import statements_sent


def begin_statement(engine) -> str:  # type: ignore[no-untyped-def]
    return "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else "BEGIN"


def until_first_write(statements: list[str]) -> tuple[list[str], list[str]]:
    first = next(i for i, s in enumerate(statements) if not s.startswith("SELECT"))
    return statements[:first], statements[first:]


@pytest.fixture
def real(world):  # type: ignore[no-untyped-def]
    app = world.app
    demo = world.clients["WMP"]
    token = (
        app.test_client()
        .post("/oauth/token", data={"grant_type": "client_credentials"}, headers=demo.basic_auth)
        .get_json()["access_token"]
    )
    engine = app.extensions["gateway.db"].engine
    with statements_sent(engine) as statements:
        yield (
            app,
            engine,
            {"Authorization": f"Bearer {token}", "X-Purpose": "iom-case-management"},
            statements,
        )


def logged(engine, request_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return (
            conn.execute(
                sa.select(AuditEventRow.status).where(AuditEventRow.body.contains(request_id))
            )
            .scalars()
            .all()
        )


def test_a_read_opens_a_transaction_only_for_its_audit_event(real) -> None:  # type: ignore[no-untyped-def]
    app, engine, headers, statements = real
    client = app.test_client()
    ref = client.get("/api/v1/subjects?limit=1", headers=headers).get_json()["items"][0]["ref"]
    statements.clear()
    request_id = uuid.uuid4().hex
    response = client.get(
        f"/api/v1/subjects/{ref}", headers={**headers, "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    reads, writes = until_first_write(statements)
    assert reads  # the caller's standing and the subject
    if engine.dialect.name == "sqlite":
        assert writes[0] == "BEGIN IMMEDIATE"
        assert writes[1].startswith("INSERT INTO")  # the audit event
    else:
        assert writes == ["WITH INSERTED"]  # the event and its subjects: one statement
    assert logged(engine, request_id) == [200]


def test_a_refused_read_is_logged_the_same_way(real) -> None:  # type: ignore[no-untyped-def]
    app, engine, headers, statements = real
    request_id = uuid.uuid4().hex
    response = app.test_client().get(
        f"/api/v1/subjects/{uuid.uuid4()}", headers={**headers, "X-Request-ID": request_id}
    )
    assert response.status_code == 404
    reads, writes = until_first_write(statements)
    assert reads and writes[0] == begin_statement(engine)
    assert logged(engine, request_id) == [404]


def test_a_write_request_holds_its_transaction_from_its_first_statement(real) -> None:  # type: ignore[no-untyped-def]
    app, engine, headers, statements = real
    request_id = uuid.uuid4().hex
    response = app.test_client().post(
        "/api/v1/referrals",
        json={"subject_ref": "nobody"},
        headers={**headers, "X-Request-ID": request_id},
    )
    assert response.status_code == 422
    assert statements[0] == begin_statement(engine)
    assert logged(engine, request_id) == [422]


def test_writes_deferred_past_the_reads_get_a_transaction(real) -> None:  # type: ignore[no-untyped-def]
    """A pseudonymised read indexes the pseudonyms it hands out: those rows and the audit
    event commit together, on PostgreSQL too, where a bare event needs no transaction."""
    app, engine, _headers, statements = real
    table = PseudonymIndex.__table__
    pseudonym = f"test-{uuid.uuid4().hex}"
    with app.app_context():
        session = app.extensions["gateway.db"].session_factory()
        try:
            begin_read_phase(session)
            subject_id = session.scalar(sa.select(Subject.id).limit(1))
            row = {
                "pseudonym": pseudonym,
                "domain": "test",
                "key_version": 1,
                "subject_id": subject_id,
            }
            write_after_read(session, insert_ignoring_duplicates(session, table), [row])
            assert statements == ["SELECT SUBJECTS.ID"]  # deferred: nothing written yet
            end_read_phase(session, keep_writes=True)
            assert statements[1:] == [begin_statement(engine), "INSERT INTO"]
        finally:
            session.rollback()  # the transaction it opened: the row goes with it
            session.close()
    with engine.connect() as conn:
        assert (
            conn.scalar(sa.select(table.c.pseudonym).where(table.c.pseudonym == pseudonym)) is None
        )
