"""Recording an event on the request's hot path.

Why no commit here: the gateway commits the event in the same transaction as the data
access it describes, so a response is never sent for an access that was not logged
(fail closed). Why Core inserts: no unit-of-work bookkeeping on every request. On
PostgreSQL the event and its subject rows go in one statement (a data-modifying CTE), one
round trip; SQLite has no such CTE and no round trips, so there it is two statements.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from audit.events import AuditEvent, canonical_bytes
from audit.models import QUERY_COLUMNS, AuditEventRow, AuditEventSubject

_events = AuditEventRow.__table__
_subjects = AuditEventSubject.__table__
# Built once: SQLAlchemy then computes each statement's cache key once, not per request.
_INSERT_EVENT = sa.insert(_events)
_INSERT_SUBJECTS = sa.insert(_subjects)
_inserted = (
    sa.insert(_events)
    .values(
        {
            name: sa.bindparam(name, type_=_events.c[name].type)
            for name in (*QUERY_COLUMNS, "body")  # the columns `event_row` fills
        }
    )
    .returning(_events.c.id)
    .cte("inserted")
)
_INSERT_EVENT_WITH_SUBJECTS = sa.insert(_subjects).from_select(
    ["event_row_id", "subject_id"],
    sa.select(
        _inserted.c.id,
        sa.func.unnest(sa.bindparam("subject_ids", type_=postgresql.ARRAY(sa.String))),
    ),
)


def event_row(event: AuditEvent) -> dict[str, object]:
    """Column values for an event: the canonical body plus its indexed copies."""
    return {
        "event_id": event.event_id,
        "kind": str(event.kind),
        "time": event.time,
        "agency": event.agency,
        "client_id": event.client_id,
        "purpose": event.purpose,
        "decision": event.decision,
        "agreement": event.agreement,
        "action": event.action,
        "resource_type": event.resource_type,
        "status": event.status,
        "body": canonical_bytes(event).decode("utf-8"),
    }


def record_event(session: Session, event: AuditEvent) -> None:
    """Insert the event and its subject rows into the caller's transaction; never commits."""
    row = event_row(event)
    connection = session.connection()  # Core statements: no ORM execution machinery needed
    if event.subject_ids and connection.dialect.name == "postgresql":
        row["subject_ids"] = list(event.subject_ids)
        connection.execute(_INSERT_EVENT_WITH_SUBJECTS, row)
        return
    result = connection.execute(_INSERT_EVENT, row)
    if event.subject_ids:
        row_id = result.inserted_primary_key[0]
        connection.execute(
            _INSERT_SUBJECTS,
            [{"event_row_id": row_id, "subject_id": s} for s in event.subject_ids],
        )
