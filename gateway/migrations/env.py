"""Alembic environment: the gateway's tables and the audit log's, one migration history."""

from alembic import context
from sqlalchemy.types import TypeDecorator

from audit.models import AuditBase
from gateway import models  # noqa: F401  (registers the tables)
from gateway.db import Base, make_engine

target_metadata = [Base.metadata, AuditBase.metadata]


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


def _render_item(type_, obj, autogen_context):  # type: ignore[no-untyped-def]
    """Render project TypeDecorators as their plain column type: migrations import no app code."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=_render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
