"""The partners' change feed: one append-only table, one gap-free position per change.

Positions come from incrementing a single counter row inside the writing transaction. The row
lock orders change-producing writes, so positions are handed out in commit order and a
rollback gives its position back: a poller reading "after my cursor" can never miss a change
that commits later with a smaller position. Reads never take the lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.db import utcnow
from gateway.models import Change, ChangeAudience, ChangeFeedCounter

_counter = ChangeFeedCounter.__table__


def reserve_positions(session: Session, count: int) -> int:
    """Take the next `count` positions; returns the last one."""
    position = session.execute(
        _counter.update()
        .where(_counter.c.id == 1)
        .values(last_position=_counter.c.last_position + count)
        .returning(_counter.c.last_position)
    ).scalar_one_or_none()
    if position is None:  # first change ever: create the counter (migrations seed it too)
        session.execute(_counter.insert().values(id=1, last_position=count))
        position = count
    return position


@dataclass(frozen=True)
class NewChange:
    kind: str
    audience: frozenset[int]
    subject_id: str | None = None
    referral_id: str | None = None
    outcome_id: str | None = None
    by_agency_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def record_changes(session: Session, changes: Sequence[NewChange]) -> list[int]:
    """Append changes in one round trip per table; returns their positions, in order."""
    if not changes:
        return []
    last = reserve_positions(session, len(changes))
    positions = list(range(last - len(changes) + 1, last + 1))
    now = utcnow()
    session.execute(
        sa.insert(Change),
        [
            {
                "position": p,
                "kind": c.kind,
                "occurred_at": now,
                "subject_id": c.subject_id,
                "referral_id": c.referral_id,
                "outcome_id": c.outcome_id,
                "by_agency_id": c.by_agency_id,
                "detail": c.detail,
            }
            for p, c in zip(positions, changes, strict=True)
        ],
    )
    session.execute(
        sa.insert(ChangeAudience),
        [
            {"agency_id": agency_id, "position": p}
            for p, c in zip(positions, changes, strict=True)
            for agency_id in sorted(c.audience)
        ],
    )
    return positions


def record_change(
    session: Session,
    kind: str,
    *,
    audience: Iterable[int],
    subject_id: str | None = None,
    referral_id: str | None = None,
    outcome_id: str | None = None,
    by_agency_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append one change for the given agencies; returns its position."""
    [position] = record_changes(
        session,
        [
            NewChange(
                kind,
                frozenset(audience),
                subject_id,
                referral_id,
                outcome_id,
                by_agency_id,
                detail or {},
            )
        ],
    )
    return position


def changes_for(
    session: Session, agency_id: int, after: int, limit: int, kinds: tuple[str, ...] | None = None
) -> list[Change]:
    """An agency's changes after a position, in position order."""
    query = (
        sa.select(Change)
        .join(ChangeAudience, ChangeAudience.position == Change.position)
        .where(ChangeAudience.agency_id == agency_id, Change.position > after)
        .order_by(Change.position)
        .limit(limit)
    )
    if kinds is not None:
        query = query.where(Change.kind.in_(kinds))
    return list(session.scalars(query))
