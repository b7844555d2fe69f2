"""SQLite's write lock: a writer waits for it in short steps (`gateway.db._begin_immediate`),
gets it once it is free, and gives up after the configured wait, as SQLite's own would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway import db


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield engine
    engine.dispose()


def busy_timeout(conn: sa.Connection) -> int:
    return conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()


def test_a_writer_waits_for_the_lock_and_gets_it_when_freed(engine: sa.Engine) -> None:
    holder = engine.connect()
    holder.begin()  # BEGIN IMMEDIATE: holds the write lock
    holder.exec_driver_sql("INSERT INTO t VALUES (1)")
    waited: list[object] = []

    def second_writer() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            waited.append(busy_timeout(conn))

    thread = threading.Thread(target=second_writer)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive() and waited == []  # still waiting, not failed
    holder.commit()
    holder.close()
    thread.join(5)
    assert waited == [int(db.SQLITE_LOCK_WAIT_SECONDS * 1000)]  # the usual timeout is back
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT x FROM t ORDER BY x").scalars().all() == [1, 2]


def test_a_writer_gives_up_after_the_wait(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SQLITE_LOCK_WAIT_SECONDS", 0.05)
    with engine.begin():  # holds the write lock throughout
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="locked"):
            conn.begin()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert busy_timeout(conn) == 50  # restored after the attempt (no BEGIN here)
