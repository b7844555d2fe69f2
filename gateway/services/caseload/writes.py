"""The statements a batch runs: the rows it gathered, one executemany per table, and the
ending of a snapshot's missing cases; apart so the per-record rules read without the SQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.models import Offence
from gateway.services.caseload.known import (
    _cohorts,
    _identifiers,
    _management,
    _needs,
    _Person,
    _risks,
    _subjects,
)
from gateway.services.caseload.results import SUBJECT_UPDATED, SyncingAgency, SyncReport
from gateway.services.changes import NewChange, record_changes

MAX_PARAMETERS = 5000  # values bound in one statement (SQLite allows 32,766)

_offences = Offence.__table__


@dataclass
class _Writes:
    """Rows a batch writes, gathered so each table takes one executemany."""

    subjects: list[dict[str, Any]] = field(default_factory=list)
    identifiers: list[dict[str, Any]] = field(default_factory=list)
    case_inserts: list[dict[str, Any]] = field(default_factory=list)
    case_updates: list[dict[str, Any]] = field(default_factory=list)
    risks: list[dict[str, Any]] = field(default_factory=list)
    needs: dict[tuple[str, str], str] = field(default_factory=dict)
    cohorts: list[dict[str, Any]] = field(default_factory=list)
    cohort_ends: dict[tuple[str, str], int] = field(default_factory=dict)  # -> setting agency
    offences: dict[tuple[str, str, date], dict[str, Any]] = field(default_factory=dict)
    refreshed: set[str] = field(default_factory=set)  # known people whose shared facts changed
    changes: list[tuple[str, str, set[int], dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class _Batch:
    """What every record of one batch is applied with."""

    agency: SyncingAgency
    probation: dict[str, list[tuple[int, str, frozenset[str]]]]
    now: datetime

    @property
    def today(self) -> date:
        return self.now.date()

    def agency_id_of(self, code: str | None) -> int | None:
        return next((i for ends in self.probation.values() for i, c, _ in ends if c == code), None)


def _flush(session: Session, writes: _Writes, people: dict[str, _Person], now: datetime) -> None:
    """One executemany per table (people first: everything else refers to them)."""
    if writes.subjects:
        session.execute(_subjects.insert(), writes.subjects)
    if writes.identifiers:
        session.execute(_identifiers.insert(), writes.identifiers)
    if writes.case_inserts:
        session.execute(_management.insert(), writes.case_inserts)
    if writes.case_updates:
        columns = [name for name in writes.case_updates[0] if name != "id"]
        session.execute(
            _management.update()
            .where(_management.c.id == sa.bindparam("_id"))
            .values({name: sa.bindparam(name) for name in columns}),
            [{**row, "_id": row["id"]} for row in writes.case_updates],
        )
    if writes.risks:
        session.execute(_risks.insert(), writes.risks)
    if writes.cohorts:
        session.execute(_cohorts.insert(), writes.cohorts)
    if writes.cohort_ends:
        # After the inserts: a flag added and ended within one batch ends too.
        session.execute(
            _cohorts.update()
            .where(
                _cohorts.c.subject_id == sa.bindparam("_subject"),
                _cohorts.c.cohort == sa.bindparam("_cohort"),
                _cohorts.c.set_by_agency_id == sa.bindparam("_by"),
                sa.or_(_cohorts.c.end_date.is_(None), _cohorts.c.end_date >= now.date()),
            )
            .values(end_date=now.date() - timedelta(days=1)),
            [
                {"_subject": subject_id, "_cohort": cohort, "_by": by}
                for (subject_id, cohort), by in sorted(writes.cohort_ends.items())
            ],
        )
    need_inserts, need_updates = [], []
    for (subject_id, pathway), level in writes.needs.items():
        row_id = people[subject_id].needs[pathway][0]
        if row_id is None:
            need_inserts.append(
                {"subject_id": subject_id, "pathway": pathway, "level": level, "assessed_at": now}
            )
        else:
            need_updates.append({"_id": row_id, "level": level, "assessed_at": now})
    if need_inserts:
        session.execute(_needs.insert(), need_inserts)
    if need_updates:
        session.execute(
            _needs.update()
            .where(_needs.c.id == sa.bindparam("_id"))
            .values(level=sa.bindparam("level"), assessed_at=sa.bindparam("assessed_at")),
            need_updates,
        )
    if writes.offences:
        session.execute(_offences.insert(), list(writes.offences.values()))
    if writes.refreshed:
        session.execute(
            _subjects.update()
            .where(_subjects.c.id.in_(sorted(writes.refreshed)))
            .values(updated_at=now)
        )


def _end_cases(
    session: Session,
    batch: _Batch,
    ending: list[tuple[int, str, str]],
    managers: dict[str, set[int]],
    report: SyncReport,
) -> None:
    """A snapshot's missing cases: terminated today, and the other managers told."""
    for chunk in _chunks([case_id for case_id, _, _ in ending]):
        session.execute(
            _management.update()
            .where(_management.c.id.in_(chunk))
            .values(
                status="terminated",
                end_date=batch.today,
                record_hash=None,
                cohorts=None,  # out of the caseload: its flags no longer speak for the agency
                updated_at=batch.now,
            )
        )
    report.ended = [local_id for _, local_id, _ in ending]
    report.ended_subjects = {subject_id for _, _, subject_id in ending}
    closed = [
        NewChange(
            SUBJECT_UPDATED,
            frozenset(managers[subject_id]),
            subject_id,
            by_agency_id=batch.agency.id,
            detail={"by": batch.agency.code, "changed": ["case_closed"]},
        )
        for subject_id in sorted(report.ended_subjects)
        if managers.get(subject_id)
    ]
    record_changes(session, closed)
    report.changes += len(closed)


def _chunks(values: list[Any], size: int = MAX_PARAMETERS) -> Iterator[list[Any]]:
    """A snapshot may end many thousands of cases: more values than one statement may bind."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
