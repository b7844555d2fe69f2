"""Database rows -> the plain dataclasses `figures.py` computes from; the only SQL of the figures.

Reads existing tables only: management (cases and their start dates), referral transitions to
"accepted", subjects (area, policing unit), cohort memberships and offences. No personal data
beyond internal subject ids leaves this module, and none of it leaves the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.models import (
    Agency,
    CohortMembership,
    Management,
    Offence,
    PolicingUnit,
    Referral,
    ReferralTransition,
    Subject,
)
from gateway.services.metrics.figures import (
    FOLLOW_UP_MONTHS,
    Membership,
    OffenceRecord,
    Person,
    Start,
    add_months,
)


@dataclass(frozen=True)
class YearRows:
    year: int
    starts: list[Start]
    people: dict[str, Person]
    memberships: list[Membership]
    offences: list[OffenceRecord]
    unit_areas: dict[str, str]


def _day(moment: datetime) -> date:
    # SQLite hands back naive datetimes; the gateway stores UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


def load_year(session: Session, year: int) -> YearRows:
    """Everything needed for one calendar year's cohort and its before/after windows."""
    first, last = date(year, 1, 1), date(year, 12, 31)
    starts = [
        Start(subject_id, on, agency, "caseload")
        for subject_id, on, agency in session.execute(
            sa.select(Management.subject_id, Management.start_date, Agency.code)
            .join(Agency, Agency.id == Management.agency_id)
            .where(Management.start_date.between(first, last))
        )
    ]
    accepted = session.execute(
        sa.select(Referral.subject_id, ReferralTransition.at, Agency.code)
        .join(ReferralTransition, ReferralTransition.referral_id == Referral.id)
        .join(Agency, Agency.id == Referral.to_agency_id)
        .where(
            ReferralTransition.to_status == "accepted",
            ReferralTransition.at >= datetime.combine(first, time(), UTC),
            ReferralTransition.at < datetime.combine(last + timedelta(days=1), time(), UTC),
        )
    )
    starts.extend(
        Start(subject_id, _day(at), agency, "referral") for subject_id, at, agency in accepted
    )

    ids = sorted({s.subject_id for s in starts})
    people: dict[str, Person] = {}
    memberships: list[Membership] = []
    offences: list[OffenceRecord] = []
    low, high = add_months(first, -FOLLOW_UP_MONTHS), add_months(last, FOLLOW_UP_MONTHS)
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        for subject_id, area, unit in session.execute(
            sa.select(Subject.id, Subject.area_code, Subject.policing_unit_code).where(
                Subject.id.in_(chunk)
            )
        ):
            people[subject_id] = Person(subject_id, area, unit)
        memberships.extend(
            Membership(*row)
            for row in session.execute(
                sa.select(
                    CohortMembership.subject_id,
                    CohortMembership.cohort,
                    CohortMembership.start_date,
                    CohortMembership.end_date,
                ).where(
                    CohortMembership.subject_id.in_(chunk),
                    CohortMembership.start_date <= last,
                    sa.or_(CohortMembership.end_date.is_(None), CohortMembership.end_date >= first),
                )
            )
        )
        offences.extend(
            OffenceRecord(*row)
            for row in session.execute(
                sa.select(
                    Offence.subject_id,
                    Offence.offence_type,
                    Offence.offence_date,
                    Offence.source,
                    Offence.source_ref,
                ).where(Offence.subject_id.in_(chunk), Offence.offence_date.between(low, high))
            )
        )
    unit_areas = dict(session.execute(sa.select(PolicingUnit.code, PolicingUnit.area_code)).all())
    return YearRows(year, starts, people, memberships, offences, unit_areas)
