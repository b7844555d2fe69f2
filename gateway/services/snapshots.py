"""Caseload snapshots sent in many batches.

An agency's caseload is its whole set of open cases, and a case-management system can send at
most 1,000 records a batch. A snapshot session lets it say "these batches, together, are my
caseload":

1. **Open** a snapshot: it gets an id, and expires after `ttl` (a system that died half way
   through must not leave a snapshot that a much later completion would apply).
2. **Send batches** tagged with the id. Each is applied exactly like any other batch, and the
   local case ids it carried are remembered. Batches the agency sends *untagged* while the
   snapshot is open count as seen too: a case the agency mentioned during the snapshot is
   evidently still its case. Every record counts, rejected ones included (a rejection says the
   record could not be applied, not that the case is gone).
3. **Complete** it: the agency's open cases that no batch mentioned since it opened are ended
   (terminated today; the people's other managers are told). The share guard applies here, to
   the whole snapshot, and a refusal leaves the snapshot open (send the missing batches, or
   confirm). Completing a completed snapshot answers the first completion again and ends
   nothing more, so a client that lost the response can safely retry.

A snapshot belongs to the agency that opened it: another agency's id is answered exactly like
an unknown one. Opening a snapshot abandons the agency's snapshot still open, so at most one is
open per agency (two interleaved snapshots of one caseload would each end the other's cases).
Abandoned or expired snapshots end nothing. The seen ids are kept only while a snapshot is open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.db import insert_ignoring_duplicates
from gateway.models import Agency, CaseloadSnapshot, CaseloadSnapshotCase, Management
from gateway.services.caseload import (
    CaseloadError,
    SyncingAgency,
    end_cases,
    guard_snapshot,
    open_cases_query,
)

_snapshots = CaseloadSnapshot.__table__
_seen = CaseloadSnapshotCase.__table__
_management = Management.__table__


class SnapshotNotFound(CaseloadError):
    status = 404
    slug = "snapshot-not-found"


class SnapshotClosed(CaseloadError):
    status = 409
    slug = "snapshot-closed"


class SnapshotEmpty(CaseloadError):
    status = 422
    slug = "snapshot-empty"


@dataclass
class Completion:
    """What completing a snapshot did (`replayed`: it had been completed before)."""

    snapshot: CaseloadSnapshot
    replayed: bool
    ended_subjects: set[str]
    changes: int


def status_of(snapshot: CaseloadSnapshot, now: datetime) -> str:
    """The snapshot's status now: an open snapshot past its expiry is expired."""
    if snapshot.status == "open" and snapshot.expires_at <= now:
        return "expired"
    return snapshot.status


def view(snapshot: CaseloadSnapshot, session: Session, now: datetime) -> dict[str, Any]:
    """The snapshot as its agency sees it (the wire shape of `SnapshotSchema`)."""
    result = snapshot.result or {}
    seen = result.get("cases_seen")
    if seen is None:
        seen = session.scalar(
            sa.select(sa.func.count()).select_from(_seen).where(_seen.c.snapshot_id == snapshot.id)
        )
    return {
        "ref": snapshot.id,
        "status": status_of(snapshot, now),
        "opened_at": snapshot.opened_at,
        "expires_at": snapshot.expires_at,
        "closed_at": snapshot.closed_at,
        "batches": snapshot.batches,
        "cases_seen": seen,
        "open_cases": result.get("open_cases"),
        "ended": result.get("ended"),
    }


def open_snapshot(
    session: Session, agency_id: int, now: datetime, ttl: timedelta
) -> CaseloadSnapshot:
    """Open a snapshot for the agency, abandoning the one it still had open (if any)."""
    _lock_agency(session, agency_id)
    _close_open(session, agency_id, now)
    snapshot = CaseloadSnapshot(
        agency_id=agency_id, status="open", opened_at=now, expires_at=now + ttl, batches=0
    )
    session.add(snapshot)
    session.flush()
    return snapshot


def find(session: Session, agency_id: int, snapshot_id: str) -> CaseloadSnapshot:
    """The agency's snapshot; another agency's is not found, exactly like a missing one."""
    snapshot = session.get(CaseloadSnapshot, snapshot_id)
    if snapshot is None or snapshot.agency_id != agency_id:
        raise SnapshotNotFound("No snapshot of your agency has this id.")
    return snapshot


def for_batch(
    session: Session, agency_id: int, snapshot_id: str, now: datetime
) -> CaseloadSnapshot:
    """The open snapshot a batch is tagged with; a closed or expired one refuses the batch
    (its sender believes it is building a snapshot that no longer can be completed).

    Takes the agency's lock first, as the batch will: a completion running at the same time
    either finishes before this reads the snapshot, or waits for the batch to commit."""
    _lock_agency(session, agency_id)
    snapshot = find(session, agency_id, snapshot_id)
    _require_open(snapshot, now)
    return snapshot


def remember_batch(
    session: Session,
    agency_id: int,
    local_ids: list[str],
    tagged: CaseloadSnapshot | None,
    now: datetime,
) -> None:
    """Record a batch's local case ids as seen by the agency's open snapshot."""
    if tagged is not None:
        targets = [tagged.id]
        tagged.batches += 1
    else:  # untagged batches during an open snapshot count as seen too (one query to learn)
        targets = list(
            session.scalars(
                sa.select(_snapshots.c.id).where(
                    _snapshots.c.agency_id == agency_id,
                    _snapshots.c.status == "open",
                    _snapshots.c.expires_at > now,
                )
            )
        )
    for snapshot_id in targets:
        rows = [{"snapshot_id": snapshot_id, "local_case_id": lid} for lid in local_ids]
        # a local id sent in two batches of a snapshot is seen once
        session.execute(insert_ignoring_duplicates(session, _seen), rows)


def complete(
    session: Session,
    agency: SyncingAgency,
    snapshot_id: str,
    *,
    confirm_end: bool,
    max_end_share: float,
    now: datetime,
) -> Completion:
    """End the agency's open cases the snapshot did not see, behind the share guard."""
    _lock_agency(session, agency.id)
    snapshot = find(session, agency.id, snapshot_id)
    if snapshot.status == "completed":
        return Completion(snapshot, True, set(), 0)
    _require_open(snapshot, now)
    if snapshot.batches == 0:
        raise SnapshotEmpty(
            "No batch was sent in this snapshot, so it cannot say which cases are gone. Send "
            "your caseload in batches tagged with the snapshot id, then complete it."
        )
    seen = sa.exists().where(
        _seen.c.snapshot_id == snapshot.id,
        _seen.c.local_case_id == _management.c.local_case_id,
    )
    rows = session.execute(open_cases_query(agency.id, now.date(), seen)).all()
    ending = [
        (case_id, local_id, subject_id) for case_id, local_id, subject_id, hit in rows if not hit
    ]
    guard_snapshot(len(ending), len(rows), max_end_share, confirm_end)
    report = end_cases(session, agency, ending, now)
    seen_count = session.scalar(
        sa.select(sa.func.count()).select_from(_seen).where(_seen.c.snapshot_id == snapshot.id)
    )
    session.execute(_seen.delete().where(_seen.c.snapshot_id == snapshot.id))
    snapshot.status, snapshot.closed_at = "completed", now
    snapshot.result = {
        "cases_seen": seen_count,
        "open_cases": len(rows),
        "ended": report.ended,
        "confirm_end": confirm_end,
    }
    session.flush()
    return Completion(snapshot, False, report.ended_subjects, report.changes)


def abandon(session: Session, agency_id: int, snapshot_id: str, now: datetime) -> CaseloadSnapshot:
    """Close a snapshot without ending anything (the export failed; start again later)."""
    _lock_agency(session, agency_id)
    snapshot = find(session, agency_id, snapshot_id)
    if snapshot.status == "abandoned":
        return snapshot
    if snapshot.status == "completed":
        raise SnapshotClosed(
            "This snapshot was completed; it can no longer be abandoned.", status="completed"
        )
    _close(session, snapshot, "abandoned" if status_of(snapshot, now) == "open" else "expired", now)
    return snapshot


def _require_open(snapshot: CaseloadSnapshot, now: datetime) -> None:
    status = status_of(snapshot, now)
    if status != "open":
        raise SnapshotClosed(
            f"This snapshot is {status}: it takes no more batches and cannot be completed. "
            "Open a new snapshot.",
            snapshot_status=status,
        )


def _close_open(session: Session, agency_id: int, now: datetime) -> None:
    for snapshot in session.scalars(
        sa.select(CaseloadSnapshot).where(
            CaseloadSnapshot.agency_id == agency_id, CaseloadSnapshot.status == "open"
        )
    ):
        _close(
            session, snapshot, "abandoned" if status_of(snapshot, now) == "open" else "expired", now
        )


def _close(session: Session, snapshot: CaseloadSnapshot, status: str, now: datetime) -> None:
    """Close without ending anything: the seen ids go, the count stays for the record."""
    seen = session.scalar(
        sa.select(sa.func.count()).select_from(_seen).where(_seen.c.snapshot_id == snapshot.id)
    )
    session.execute(_seen.delete().where(_seen.c.snapshot_id == snapshot.id))
    snapshot.status, snapshot.closed_at = status, now
    snapshot.result = {"cases_seen": seen}
    session.flush()


def _lock_agency(session: Session, agency_id: int) -> None:
    """One caseload change per agency at a time (as a sync batch takes it): PostgreSQL row
    lock; SQLite's write lock does this already."""
    session.execute(sa.select(Agency.id).where(Agency.id == agency_id).with_for_update())
