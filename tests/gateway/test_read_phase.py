"""On SQLite a read request reads without the database's write lock and takes it only for its
audit event, so workers do not queue behind each other's reads (`gateway.db.begin_read_phase`).

These run against the session's real database, not inside the per-test transaction: the
point is which transactions the request itself opens. Their audit events are committed."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from audit.models import AuditEventRow


@pytest.fixture
def real(world):  # type: ignore[no-untyped-def]
    if world.backend != "sqlite":
        pytest.skip("PostgreSQL has no database-wide write lock; reads run as usual there")
    app = world.app
    demo = world.clients["WMP"]
    token = (
        app.test_client()
        .post("/oauth/token", data={"grant_type": "client_credentials"}, headers=demo.basic_auth)
        .get_json()["access_token"]
    )
    engine = app.extensions["gateway.db"].engine
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(" ".join(statement.split()[:2]).upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield (
            app,
            engine,
            {"Authorization": f"Bearer {token}", "X-Purpose": "iom-case-management"},
            statements,
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def logged(engine, request_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return (
            conn.execute(
                sa.select(AuditEventRow.status).where(AuditEventRow.body.contains(request_id))
            )
            .scalars()
            .all()
        )


def test_a_read_takes_the_write_lock_only_for_its_audit_event(real) -> None:  # type: ignore[no-untyped-def]
    app, engine, headers, statements = real
    client = app.test_client()
    ref = client.get("/api/v1/subjects?limit=1", headers=headers).get_json()["items"][0]["ref"]
    statements.clear()
    request_id = uuid.uuid4().hex
    response = client.get(
        f"/api/v1/subjects/{ref}", headers={**headers, "X-Request-ID": request_id}
    )
    assert response.status_code == 200
    begin = statements.index("BEGIN IMMEDIATE")
    assert statements[:begin] and all(s.startswith("SELECT") for s in statements[:begin])
    assert statements[begin + 1].startswith("INSERT INTO")  # the audit event
    assert logged(engine, request_id) == [200]


def test_a_refused_read_is_logged_the_same_way(real) -> None:  # type: ignore[no-untyped-def]
    app, engine, headers, statements = real
    request_id = uuid.uuid4().hex
    response = app.test_client().get(
        f"/api/v1/subjects/{uuid.uuid4()}", headers={**headers, "X-Request-ID": request_id}
    )
    assert response.status_code == 404
    begin = statements.index("BEGIN IMMEDIATE")
    assert all(s.startswith("SELECT") for s in statements[:begin])
    assert logged(engine, request_id) == [404]


def test_a_write_request_holds_the_lock_from_its_first_statement(real) -> None:  # type: ignore[no-untyped-def]
    app, engine, headers, statements = real
    request_id = uuid.uuid4().hex
    response = app.test_client().post(
        "/api/v1/referrals",
        json={"subject_ref": "nobody"},
        headers={**headers, "X-Request-ID": request_id},
    )
    assert response.status_code == 422
    assert statements[0] == "BEGIN IMMEDIATE"
    assert logged(engine, request_id) == [422]
