"""Recording an event on the request's hot path.

Why no commit here: the gateway commits the event in the same transaction as the data
access it describes, so a response is never sent for an access that was not logged
(fail closed). Why Core inserts: one INSERT for the event and one executemany for its
subjects, with no unit-of-work bookkeeping on every request.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.events import AuditEvent, canonical_bytes
from audit.models import AuditEventRow, AuditEventSubject

_events = AuditEventRow.__table__
_subjects = AuditEventSubject.__table__


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
    result = session.execute(sa.insert(_events), event_row(event))
    if event.subject_ids:
        row_id = result.inserted_primary_key[0]
        session.execute(
            sa.insert(_subjects),
            [{"event_row_id": row_id, "subject_id": s} for s in event.subject_ids],
        )
