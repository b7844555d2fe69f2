"""Subjects as the policies see them: the record context a decision needs, the full record
that disclosure filters, and list scopes turned into SQL so lists never load rows they drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.db import json_rows
from gateway.models import (
    Agency,
    CohortMembership,
    Management,
    Referral,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
)
from gateway.models import Need as NeedRow
from gateway.models import VictimLink as VictimLinkRow
from policies.engine import GrantScope, PolicySet, RecordContext

OPEN_REFERRAL = ("submitted", "accepted", "engaged")
CONSENTED_STATUSES = ("accepted", "engaged", "completed", "disengaged")
CONSENT_OK = ("given", "not_required")


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _active(start: date, end: date | None, today: date) -> bool:
    return start <= today and (end is None or end >= today)


@dataclass(frozen=True, slots=True)
class Cohort:
    cohort: str
    start_date: date
    end_date: date | None


@dataclass(frozen=True, slots=True)
class Risk:
    reoffending_score: int | None
    reoffending_band: str | None
    serious_harm_level: str | None
    assessed_at: datetime


_RISK_FIELDS = tuple(field.name for field in fields(Risk))


@dataclass(frozen=True, slots=True)
class Need:
    pathway: str
    level: str


@dataclass(frozen=True, slots=True)
class Managing:
    agency_code: str
    statutory: bool
    offender_manager_ref: str | None
    start_date: date
    end_date: date | None


@dataclass(frozen=True, slots=True)
class VictimLink:
    victim_ref: str
    relationship_to_subject: str


@dataclass(frozen=True, slots=True)
class ReferralLink:
    """A referral as a decision about its subject sees it: who it went to and how it stands."""

    to_agency_code: str
    status: str
    consent_status: str | None
    closed_at: datetime | None
    purpose: str


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    """A subject with everything a decision or a disclosure may need, as plain values."""

    id: str
    given_name: str
    family_name: str
    date_of_birth: date
    gender: str
    ethnicity: str | None
    address_line: str | None
    postcode: str | None
    phone: str | None
    area_code: str
    policing_unit_code: str | None
    updated_at: datetime
    identifiers: tuple[tuple[str, str], ...]
    cohorts: tuple[Cohort, ...]
    latest_risk: Risk | None
    needs: tuple[Need, ...]
    management: tuple[Managing, ...]
    victim_links: tuple[VictimLink, ...]
    referrals: tuple[ReferralLink, ...]

    def active_cohorts(self, today: date) -> list[str]:
        return sorted(c.cohort for c in self.cohorts if _active(c.start_date, c.end_date, today))

    def risk(self) -> dict[str, Any] | None:
        """The latest assessment as the subject and case resources show it (its values are
        immutable scalars, so not `asdict`, which deep-copies each one)."""
        if self.latest_risk is None:
            return None
        return {name: getattr(self.latest_risk, name) for name in _RISK_FIELDS}


def load_subjects(session: Session, subject_ids: Iterable[str]) -> dict[str, SubjectRecord]:
    """Subjects with everything a decision or disclosure may need, in one statement.

    Every read of a subject goes through here, so it is the gateway's hottest query: each
    related collection comes back as one JSON array column (a correlated aggregate) rather
    than as ORM objects from a query per collection, which cost most of a read."""
    session.flush()  # Core on the session's connection: no ORM autoflush, and no ORM rows
    rows = session.connection().execute(_SUBJECT_RECORDS_BY_ID, {"ids": list(subject_ids)})
    return {row.id: _subject_record(row) for row in rows}


def _collection(
    model: type, *columns: sa.ColumnElement, agency: sa.ColumnElement | None = None
) -> sa.ScalarSelect:
    """The subject's rows of `model` as one JSON array of [column, ...] arrays; `agency`: the
    foreign key to join agencies by, for their codes."""
    select = sa.select(json_rows(*columns)).select_from(model)
    if agency is not None:
        select = select.join(Agency, Agency.id == agency)
    return select.where(model.subject_id == Subject.id).scalar_subquery()


_LATEST_RISK = (
    sa.select(RiskAssessment.id)
    .where(RiskAssessment.subject_id == Subject.id)
    .order_by(RiskAssessment.assessed_at.desc(), RiskAssessment.id.desc())
    .limit(1)
    .correlate_except(RiskAssessment)  # to the subject, not to the enclosing risk query
    .scalar_subquery()
)
# Built once: SQLAlchemy memoises a statement's cache key, which for this tree costs more to
# compute than the query takes to run.
_SUBJECT_RECORDS_BY_ID = sa.select(
    *Subject.__table__.c,
    _collection(SubjectIdentifier, SubjectIdentifier.scheme, SubjectIdentifier.value).label(
        "identifiers_"
    ),
    _collection(
        CohortMembership,
        CohortMembership.cohort,
        CohortMembership.start_date,
        CohortMembership.end_date,
    ).label("cohorts_"),
    sa.select(
        json_rows(
            RiskAssessment.reoffending_score,
            RiskAssessment.reoffending_band,
            RiskAssessment.serious_harm_level,
            RiskAssessment.assessed_at,
        )
    )
    .where(RiskAssessment.id == _LATEST_RISK)
    .scalar_subquery()
    .label("risk_"),
    _collection(NeedRow, NeedRow.pathway, NeedRow.level).label("needs_"),
    _collection(
        Management,
        Agency.code,
        Management.statutory,
        Management.offender_manager_ref,
        Management.start_date,
        Management.end_date,
        agency=Management.agency_id,
    ).label("management_"),
    _collection(
        VictimLinkRow, VictimLinkRow.victim_ref, VictimLinkRow.relationship_to_subject
    ).label("victims_"),
    _collection(
        Referral,
        Agency.code,
        Referral.status,
        Referral.consent["status"].as_string(),
        Referral.closed_at,
        Referral.purpose,
        agency=Referral.to_agency_id,
    ).label("referrals_"),
).where(Subject.id.in_(sa.bindparam("ids", expanding=True)))


def _subject_record(row: sa.Row) -> SubjectRecord:
    risks = [Risk(score, band, harm, _moment(at)) for score, band, harm, at in row.risk_ or ()]
    return SubjectRecord(
        id=row.id,
        given_name=row.given_name,
        family_name=row.family_name,
        date_of_birth=row.date_of_birth,
        gender=row.gender,
        ethnicity=row.ethnicity,
        address_line=row.address_line,
        postcode=row.postcode,
        phone=row.phone,
        area_code=row.area_code,
        policing_unit_code=row.policing_unit_code,
        updated_at=row.updated_at,
        identifiers=tuple((scheme, value) for scheme, value in row.identifiers_ or ()),
        cohorts=tuple(
            Cohort(cohort, _day(start), _day(end)) for cohort, start, end in row.cohorts_ or ()
        ),
        latest_risk=risks[0] if risks else None,
        needs=tuple(Need(pathway, level) for pathway, level in row.needs_ or ()),
        management=tuple(
            Managing(agency, bool(statutory), manager, _day(start), _day(end))
            for agency, statutory, manager, start, end in row.management_ or ()
        ),
        victim_links=tuple(VictimLink(ref, kind) for ref, kind in row.victims_ or ()),
        referrals=tuple(
            ReferralLink(agency, status, consent, _moment(closed), purpose)
            for agency, status, consent, closed, purpose in row.referrals_ or ()
        ),
    )


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _moment(value: str | None) -> datetime | None:
    """A timestamp from JSON: SQLite's stored text (naive UTC) or PostgreSQL's ISO form."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record_context(
    subject: SubjectRecord, today: date, policy: PolicySet | None = None, *, purpose: str | None
) -> RecordContext:
    """What a decision about this subject, for `purpose`, needs to know, relationships
    included.

    A referral relates its recipient to the person for the referral's own purpose only (under
    another, the recipient's reading would be purpose creep); `purpose=None` counts every
    referral, for callers that override the referral relationships. A closed referral keeps
    its recipient related until the retention period of the agreements covering its purpose
    has passed (needs `policy`)."""
    managed = [m for m in subject.management if _active(m.start_date, m.end_date, today)]
    referred = [
        r
        for r in subject.referrals
        if (purpose is None or r.purpose == purpose) and _referral_visible(r, today, policy)
    ]
    return RecordContext(
        cohorts=frozenset(subject.active_cohorts(today)),
        area=subject.area_code,
        age=age_on(subject.date_of_birth, today),
        managed_by=frozenset(m.agency_code for m in managed),
        active_referrals_to=frozenset(r.to_agency_code for r in referred),
        accepted_with_consent_by=frozenset(r.to_agency_code for r in referred if _consented(r)),
    )


def _consented(referral: ReferralLink) -> bool:
    return referral.status in CONSENTED_STATUSES and referral.consent_status in CONSENT_OK


def _referral_visible(referral: ReferralLink, today: date, policy: PolicySet | None) -> bool:
    if referral.status in OPEN_REFERRAL:
        return True
    if policy is None or referral.closed_at is None:
        return False
    return today <= retention_end(policy, referral.purpose, referral.closed_at.date())


def retention_end(policy: PolicySet, purpose: str, closed_on: date) -> date:
    """The last day a closed exchange stays visible: the longest retention of the agreements
    that name its purpose (none: the day it closed)."""
    ends = [
        a.retention.after(closed_on)
        for a in policy.agreements
        if purpose in {p.code for p in a.purposes}
    ]
    return max(ends, default=closed_on)


def full_record(subject: SubjectRecord, today: date) -> dict:
    """Every field of the subject resource; `policies.disclose` decides what leaves."""
    identifiers = {
        scheme.lower(): value
        for scheme, value in subject.identifiers
        if scheme in ("PNC", "CRN", "NOMIS")
    }
    return {
        "ref": subject.id,
        "given_name": subject.given_name,
        "family_name": subject.family_name,
        "date_of_birth": subject.date_of_birth,
        "gender": subject.gender,
        "ethnicity": subject.ethnicity,
        "address_line": subject.address_line,
        "postcode": subject.postcode,
        "phone": subject.phone,
        "identifiers": identifiers,
        "area": subject.area_code,
        "policing_unit": subject.policing_unit_code,
        "cohorts": subject.active_cohorts(today),
        "risk": subject.risk(),
        "needs": {n.pathway: n.level for n in subject.needs},
        "management": [
            {
                "agency": m.agency_code,
                "statutory": m.statutory,
                "offender_manager_ref": m.offender_manager_ref,
                "since": m.start_date,
            }
            for m in subject.management
            if _active(m.start_date, m.end_date, today)
        ],
        "linked_victims": [
            {"victim_ref": v.victim_ref, "relationship": v.relationship_to_subject}
            for v in subject.victim_links
        ],
        "updated_at": subject.updated_at,
    }


def scope_filter(
    scopes: list[GrantScope], agency_id: int, today: date, purpose: str
) -> sa.ColumnElement[bool]:
    """SQL for "some grant's conditions hold" for `purpose`: OR over grants of AND over
    conditions (as `record_context` and the engine decide one record)."""
    clauses = [_grant_clause(scope, agency_id, today, purpose) for scope in scopes]
    return sa.or_(*clauses) if clauses else sa.false()


def in_cohort(cohorts: Iterable[str], today: date) -> sa.ColumnElement[bool]:
    """SQL for "the subject is in one of these cohorts today": an ended membership is the
    past, which no grant releases (disclosed records list active cohorts only)."""
    return sa.exists().where(
        CohortMembership.subject_id == Subject.id,
        CohortMembership.cohort.in_(sorted(cohorts)),
        CohortMembership.start_date <= today,
        sa.or_(CohortMembership.end_date.is_(None), CohortMembership.end_date >= today),
    )


def _grant_clause(
    scope: GrantScope, agency_id: int, today: date, purpose: str
) -> sa.ColumnElement[bool]:
    conditions = scope
    parts: list[sa.ColumnElement[bool]] = []
    if conditions.cohorts:
        parts.append(in_cohort(conditions.cohorts, today))
    if conditions.areas:
        parts.append(Subject.area_code.in_(sorted(conditions.areas)))
    if conditions.min_age is not None:  # born on or before today minus min_age years
        parts.append(Subject.date_of_birth <= _years_before(today, conditions.min_age))
    if conditions.max_age is not None:  # younger than max_age + 1
        parts.append(Subject.date_of_birth > _years_before(today, conditions.max_age + 1))
    if conditions.relationships:
        parts.append(
            sa.or_(
                *(
                    _relationship(r, agency_id, today, purpose)
                    for r in sorted(conditions.relationships)
                )
            )
        )
    return sa.and_(sa.true(), *parts)


def _relationship(
    name: str, agency_id: int, today: date, purpose: str
) -> sa.ColumnElement[bool]:
    if name == "in_recipient_caseload":
        return sa.exists().where(
            Management.subject_id == Subject.id,
            Management.agency_id == agency_id,
            Management.start_date <= today,
            sa.or_(Management.end_date.is_(None), Management.end_date >= today),
        )
    referral = sa.exists().where(
        Referral.subject_id == Subject.id,
        Referral.to_agency_id == agency_id,
        Referral.purpose == purpose,
    )
    # Lists show open referrals' subjects; closed ones stay readable one by one until
    # retention ends (see record_context), but are not listed (nor for their consent: a
    # closed referral past retention matched here, and the per-record decision dropped it).
    if name == "active_referral_to_recipient":
        return referral.where(Referral.status.in_(OPEN_REFERRAL))
    if name == "accepted_referral_with_consent":
        return referral.where(
            Referral.status.in_([s for s in CONSENTED_STATUSES if s in OPEN_REFERRAL]),
            Referral.consent["status"].as_string().in_(CONSENT_OK),
        )
    return sa.false()


def _years_before(today: date, years: int) -> date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def find_by_identifier(session: Session, scheme: str, value: str) -> str | None:
    return session.scalar(
        sa.select(SubjectIdentifier.subject_id).where(
            SubjectIdentifier.scheme == scheme, SubjectIdentifier.value == value
        )
    )
