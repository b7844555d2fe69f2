"""What the database already knows about a batch's cases and people: the reads, apart from
the decisions so the fixed number of queries a batch costs can be seen in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.models import (
    Agency,
    CohortMembership,
    Management,
    Need,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
)

HIGH_HARM = frozenset({"high", "very_high"})
PROBATION_KINDS = ("nps", "crc")

_management = Management.__table__
_subjects = Subject.__table__
_identifiers = SubjectIdentifier.__table__
_risks = RiskAssessment.__table__
_needs = Need.__table__
_cohorts = CohortMembership.__table__


@dataclass
class _Case:
    id: int
    subject_id: str
    record_hash: str | None
    status: str
    start_date: date
    end_date: date | None
    transfer_to: str | None

    def open_on(self, today: date) -> bool:
        return self.start_date <= today and (self.end_date is None or self.end_date >= today)


@dataclass(slots=True)
class _Person:
    """One subject's facts the sync reads and keeps current while it works through a batch."""

    date_of_birth: date
    area: str
    identifiers: dict[str, set[str]] = field(default_factory=dict)  # scheme -> values held
    cohorts: set[str] = field(default_factory=set)
    # cohort -> the agencies whose sync set its current membership (None: set otherwise)
    cohort_setters: dict[str, set[int | None]] = field(default_factory=dict)
    # (assessed_at, score, harm level, assessing agency id, row id); row id 0 = added now
    risks: list[tuple[datetime, int | None, str | None, int, int]] = field(default_factory=list)
    needs: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    managers: set[int] = field(default_factory=set)
    # (agency id, local case id) -> the cohorts that case's current record lists, where known
    listed: dict[tuple[int, str | None], frozenset[str]] = field(default_factory=dict)
    new: bool = False


def _existing_cases(session: Session, agency_id: int, local_ids: list[str]) -> dict[str, _Case]:
    rows = session.execute(
        sa.select(
            _management.c.local_case_id,
            _management.c.id,
            _management.c.subject_id,
            _management.c.record_hash,
            _management.c.status,
            _management.c.start_date,
            _management.c.end_date,
            _management.c.transfer_to,
        ).where(_management.c.agency_id == agency_id, _management.c.local_case_id.in_(local_ids))
    )
    return {row[0]: _Case(*row[1:]) for row in rows}


def _open_cases(session: Session, agency_id: int, today: date) -> list[tuple[int, str, str]]:
    """(id, local case id, subject id) of the agency's active cases, open today."""
    return [
        (case_id, local_id, subject_id)
        for case_id, local_id, subject_id, _ in session.execute(open_cases_query(agency_id, today))
    ]


def open_cases_query(
    agency_id: int, today: date, seen: sa.ColumnElement[bool] | None = None
) -> sa.Select:
    """The agency's active cases open today: (id, local case id, subject id, seen), where
    `seen` is a per-case condition (a snapshot's seen cases) or always false."""
    return (
        sa.select(
            _management.c.id,
            _management.c.local_case_id,
            _management.c.subject_id,
            seen if seen is not None else sa.false(),
        )
        .where(
            _management.c.agency_id == agency_id,
            _management.c.status == "active",
            _management.c.start_date <= today,
            sa.or_(_management.c.end_date.is_(None), _management.c.end_date >= today),
        )
        .order_by(_management.c.id)
    )


def _identifier_owners(
    session: Session, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    by_scheme: dict[str, list[str]] = {}
    for scheme, value in wanted:
        by_scheme.setdefault(scheme, []).append(value)
    if not by_scheme:
        return {}
    clauses = [
        sa.and_(_identifiers.c.scheme == scheme, _identifiers.c.value.in_(sorted(values)))
        for scheme, values in sorted(by_scheme.items())
    ]
    rows = session.execute(
        sa.select(_identifiers.c.scheme, _identifiers.c.value, _identifiers.c.subject_id).where(
            sa.or_(*clauses)
        )
    )
    return {(scheme, value): subject_id for scheme, value, subject_id in rows}


def _people(session: Session, subject_ids: set[str], today: date) -> dict[str, _Person]:
    """The facts of these subjects, in one query per table."""
    if not subject_ids:
        return {}
    ids = sorted(subject_ids)
    people = {
        sid: _Person(born, area)
        for sid, born, area in session.execute(
            sa.select(_subjects.c.id, _subjects.c.date_of_birth, _subjects.c.area_code).where(
                _subjects.c.id.in_(ids)
            )
        )
    }
    for sid, scheme, value in session.execute(
        sa.select(_identifiers.c.subject_id, _identifiers.c.scheme, _identifiers.c.value).where(
            _identifiers.c.subject_id.in_(ids), _identifiers.c.scheme.in_(("PNC", "CRN", "NOMIS"))
        )
    ):
        people[sid].identifiers.setdefault(scheme, set()).add(value)
    for sid, cohort, set_by in session.execute(
        sa.select(_cohorts.c.subject_id, _cohorts.c.cohort, _cohorts.c.set_by_agency_id).where(
            _cohorts.c.subject_id.in_(ids),
            _cohorts.c.start_date <= today,
            sa.or_(_cohorts.c.end_date.is_(None), _cohorts.c.end_date >= today),
        )
    ):
        people[sid].cohorts.add(cohort)
        people[sid].cohort_setters.setdefault(cohort, set()).add(set_by)
    for sid, at, score, level, by, row_id in session.execute(
        sa.select(
            _risks.c.subject_id,
            _risks.c.assessed_at,
            _risks.c.reoffending_score,
            _risks.c.serious_harm_level,
            _risks.c.assessed_by_agency_id,
            _risks.c.id,
        ).where(_risks.c.subject_id.in_(ids))
    ):
        people[sid].risks.append((at, score, level, by, row_id))
    for sid, pathway, level, row_id in session.execute(
        sa.select(_needs.c.subject_id, _needs.c.pathway, _needs.c.level, _needs.c.id).where(
            _needs.c.subject_id.in_(ids)
        )
    ):
        people[sid].needs[pathway] = (row_id, level)
    # Every case, not only the open ones: a case its agency closed still lists what its last
    # record listed (a snapshot's ending forgets that: see `_end_cases`).
    for sid, agency_id, local_id, start, end, cohorts in session.execute(
        sa.select(
            _management.c.subject_id,
            _management.c.agency_id,
            _management.c.local_case_id,
            _management.c.start_date,
            _management.c.end_date,
            _management.c.cohorts,
        ).where(_management.c.subject_id.in_(ids))
    ):
        person = people[sid]
        if start <= today and (end is None or end >= today):
            person.managers.add(agency_id)
        if cohorts is not None:
            person.listed[agency_id, local_id] = frozenset(cohorts)
    return people


def _probation_agencies(session: Session) -> dict[str, list[tuple[int, str, frozenset[str]]]]:
    """Unsuspended NPS and CRC agencies: the two ends a transfer flag can point at."""
    found: dict[str, list[tuple[int, str, frozenset[str]]]] = {k: [] for k in PROBATION_KINDS}
    for agency_id, code, kind, areas in session.execute(
        sa.select(Agency.id, Agency.code, Agency.kind, Agency.areas)
        .where(Agency.kind.in_(PROBATION_KINDS), Agency.suspended_at.is_(None))
        .order_by(Agency.code)
    ):
        found[kind].append((agency_id, code, frozenset(areas or ())))
    return found


def allocation_kind(harm_level: str | None) -> str | None:
    """Which probation provider should hold a case: NPS the higher-risk cases, CRC the rest."""
    if harm_level is None:
        return None
    return "nps" if harm_level in HIGH_HARM else "crc"
