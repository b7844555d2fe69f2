"""Database engine and sessions: the same code path for SQLite and PostgreSQL.

A request uses one session: a data change and the audit event describing it commit together
or not at all. A read request runs its reads as single statements and writes its audit event
after them (`begin_read_phase`).

On both backends the driver is in autocommit mode and never begins a transaction itself:
SQLAlchemy's "begin" event does (`_begin_unless_reading`), so that a read request can skip it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


def utcnow() -> datetime:
    return datetime.now(UTC)


class json_rows(sa.sql.functions.GenericFunction):
    """Aggregate: the group's rows as one JSON array of `[column, ...]` arrays, `[]` if none.

    Lets one statement bring back a parent row with its child collections, where the ORM
    would issue a query per collection (a round trip each on PostgreSQL). Dates and times
    come back as ISO strings."""

    type = sa.JSON()
    inherit_cache = True


@compiles(json_rows, "sqlite")
def _json_rows_sqlite(
    element: json_rows, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


@compiles(json_rows, "postgresql")
def _json_rows_postgresql(
    element: json_rows, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    arrays = f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"
    return f"coalesce({arrays}, '[]'::json)"


def insert_ignoring_duplicates(session: Session, table: sa.Table) -> sa.Insert:
    """INSERT ... ON CONFLICT DO NOTHING, on SQLite and PostgreSQL alike."""
    return _insert_ignoring_duplicates(session.get_bind().dialect.name, table)


@functools.cache
def _insert_ignoring_duplicates(dialect: str, table: sa.Table) -> sa.Insert:
    # One statement per dialect and table: SQLAlchemy then computes its cache key once.
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()


SQLITE_LOCK_WAIT_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_LOCK_WAIT_SECONDS})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, begins
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        sa.event.listen(engine, "begin", _begin_unless_reading(_begin_immediate))
        return engine
    # A database that goes silent (a network partition) must fail the request with a 503
    # well inside gunicorn's 30 s worker timeout, not hang until the worker is killed.
    connect_args = {
        "connect_timeout": 5,
        "tcp_user_timeout": 10_000,  # ms without an acknowledgement before the socket fails
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    engine = sa.create_engine(
        url,
        isolation_level="AUTOCOMMIT",  # the driver never begins; `_begin_unless_reading` does
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args=connect_args,
    )
    sa.event.listen(engine, "begin", _begin_unless_reading(_begin))
    return engine


def _begin_unless_reading(
    begin: Callable[[sa.Connection], None],
) -> Callable[[sa.Connection], None]:
    """The "begin" event: open the transaction, unless a read phase starts (or the caller
    asked for autocommit)."""

    def begin_transaction(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        reads_first = options.get(READ_PHASE, False)
        conn.info[BEGIN_AFTER_READS] = begin if reads_first else None  # for `end_read_phase`
        if not reads_first and options.get("isolation_level") != "AUTOCOMMIT":
            begin(conn)

    return begin_transaction


def _begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _begin_immediate(conn: sa.Connection) -> None:
    """SQLite: BEGIN IMMEDIATE, waiting for the write lock in short steps.

    IMMEDIATE: every request writes its audit event, so a transaction takes the write lock
    up front and never fails upgrading a stale read snapshot under load. The waiting: SQLite's
    own busy handler sleeps 1, 2, 5, 10... ms between attempts, while a request holds the lock
    for a fraction of a millisecond, so under load a quarter of requests idled a millisecond
    or more for a lock long since free. Here the wait starts at 20 us and doubles up to 1 ms,
    for the same SQLITE_LOCK_WAIT_SECONDS in all."""
    driver = conn.connection.dbapi_connection
    driver.execute("PRAGMA busy_timeout = 0")  # a held lock fails BEGIN at once; we wait
    try:
        pause, deadline = 20e-6, time.monotonic() + SQLITE_LOCK_WAIT_SECONDS
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except sa.exc.OperationalError as error:
                busy = getattr(error.orig, "sqlite_errorname", None) == "SQLITE_BUSY"
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
    finally:
        driver.execute(f"PRAGMA busy_timeout = {int(SQLITE_LOCK_WAIT_SECONDS * 1000)}")


READ_PHASE = "gateway_read_phase"
DEFERRED_WRITES = "gateway_deferred_writes"
BEGIN_AFTER_READS = "gateway_begin_after_reads"


def begin_read_phase(session: Session) -> None:
    """Start a read request: its statements run on their own, outside a transaction.

    SQLite has one writer at a time, and every request writes its audit event, so a request
    that held the write lock from its first statement would serialise every worker on the
    whole request; on PostgreSQL, BEGIN and COMMIT are two of a read's round trips. So a
    read request's statements run without BEGIN (each SELECT is its own snapshot, as under
    PostgreSQL's READ COMMITTED anyway), and `end_read_phase` opens the write transaction on
    the same connection for the audit event and any `write_after_read` rows. The response
    still waits for that write: fail closed as before."""
    if not session.in_transaction():
        session.connection(execution_options={READ_PHASE: True})
        session.info[READ_PHASE] = True


def write_after_read(session: Session, statement: sa.Executable, rows: list[dict]) -> None:
    """Execute now, or in a read phase keep it for the write transaction that ends it (a
    write among the reads would run outside any transaction, and commit even if the request
    were then refused)."""
    if session.info.get(READ_PHASE):
        session.info.setdefault(DEFERRED_WRITES, []).append((statement, rows))
    else:
        session.execute(statement, rows)


def end_read_phase(session: Session, *, keep_writes: bool) -> None:
    """End the read phase: open the write transaction and replay the deferred writes, or
    (`keep_writes=False`, a refused request) drop them; the caller then rolls back.

    On PostgreSQL, when nothing is deferred, the audit event is the one write left, and
    `audit.record` writes it in one statement, atomic on its own: no transaction is opened,
    which saves the BEGIN and COMMIT round trips. (SQLite's takes two statements.)"""
    if not session.info.pop(READ_PHASE, False):
        return
    writes = session.info.pop(DEFERRED_WRITES, [])
    if not keep_writes:
        return
    connection = session.connection()
    begin = connection.info.pop(BEGIN_AFTER_READS, None)  # None in a test's outer transaction
    one_statement_follows = (
        connection.dialect.name == "postgresql"
        and not writes
        and not (session.new or session.dirty or session.deleted)
    )
    if begin is not None and not one_statement_follows:
        begin(connection)
    for statement, rows in writes:
        session.execute(statement, rows)


class Database:
    """The engine and the request-scoped session factory of one app."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.session: scoped_session[Session] = scoped_session(self.session_factory)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.session.remove()
        self.engine.dispose()
