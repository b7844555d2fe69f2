"""Watching what SQL the gateway sends: tests that check which statements a request costs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def statements_sent(engine: sa.Engine, words: int = 2) -> Iterator[list[str]]:
    """The first `words` words of each statement the engine sends inside the block, upper
    case ("SELECT SUBJECTS.ID", "BEGIN IMMEDIATE", "INSERT INTO"): enough to tell them apart
    without quoting whole generated SQL."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        sent.append(" ".join(statement.split()[:words]).upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
