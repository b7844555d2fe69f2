"""Reading the audit log back in tests: what the last request recorded."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.models import AuditEventRow


def last_event(db: Session) -> dict:
    """The body of the newest audit event."""
    body = db.scalar(sa.select(AuditEventRow.body).order_by(AuditEventRow.id.desc()).limit(1))
    assert body is not None, "no audit event was written"
    return json.loads(body)
