"""The databases the suite runs against: SQLite always, PostgreSQL whenever one answers.

Each test session gets its own throwaway database so that parallel runs and
earlier runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_server_url() -> str | None:
    """The PostgreSQL URL to test against, or None when no server answers."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    # asked for explicitly: an unreachable server is a failure, not a skip
    return url if answers(url, strict="TEST_DATABASE_URL" in os.environ) else None


def answers(url: str, *, strict: bool = False) -> bool:
    """Whether a PostgreSQL server answers at `url` (`strict`: raise if it does not)."""
    if not url.startswith("postgresql"):
        return False
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        if strict:
            raise
        return False
    finally:
        engine.dispose()


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if postgres_server_url() else ["sqlite"]


@contextmanager
def throwaway_database(backend: str, directory: Path, server: str | None = None) -> Iterator[str]:
    """Yield the URL of an empty database that is dropped afterwards.

    `server` is the PostgreSQL server to create it on (default: the one tests use)."""
    if backend == "sqlite":
        path = directory / f"test-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    server = server or postgres_server_url()
    assert server is not None
    name = f"iomgw_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
