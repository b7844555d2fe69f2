"""Database fixtures for the audit tests: SQLite always, PostgreSQL when one answers.

One throwaway database per backend per test session; every test runs in a transaction
that is rolled back, so tests never see each other's rows. Nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.models import AuditBase, install_append_only_triggers
from tests.databases import backends, throwaway_database


def make_engine(url: str) -> sa.Engine:
    """An engine as the gateway would configure it; SQLite gets real BEGIN/SAVEPOINT."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=10000")

        @sa.event.listens_for(engine, "begin")
        def _begin(connection) -> None:
            connection.exec_driver_sql("BEGIN")

    return engine


def create_audit_schema(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        AuditBase.metadata.create_all(connection)
        install_append_only_triggers(connection)


@pytest.fixture(scope="session", params=backends())
def audit_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    tmp = tmp_path_factory.mktemp(f"audit-{request.param}")
    with throwaway_database(request.param, tmp) as url:
        engine = make_engine(url)
        create_audit_schema(engine)
        yield engine
        engine.dispose()


@pytest.fixture
def audit_session(audit_engine: sa.Engine) -> Iterator[Session]:
    connection = audit_engine.connect()
    outer = connection.begin()
    if connection.dialect.name == "postgresql":
        # Sequences ignore rollbacks; restart so the sealer does not see earlier tests'
        # ids as gaps. Every earlier row was rolled back, so the ids are free.
        connection.execute(sa.text("ALTER SEQUENCE audit_events_id_seq RESTART WITH 1"))
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def fresh_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[sa.Engine]:
    """A database of its own, for tests that really commit (concurrency)."""
    backend = request.param
    with throwaway_database(backend, tmp_path) as url:
        engine = make_engine(url)
        create_audit_schema(engine)
        yield engine
        engine.dispose()
