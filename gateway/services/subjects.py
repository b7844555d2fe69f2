"""Subjects as the policies see them: the record context a decision needs, the full record
that disclosure filters, and list scopes turned into SQL so lists never load rows they drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from gateway.models import (
    CohortMembership,
    Management,
    Referral,
    Subject,
    SubjectIdentifier,
)
from policies.engine import GrantScope, PolicySet, RecordContext

OPEN_REFERRAL = ("submitted", "accepted", "engaged")
CONSENTED_STATUSES = ("accepted", "engaged", "completed", "disengaged")
CONSENT_OK = ("given", "not_required")


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _active(start: date, end: date | None, today: date) -> bool:
    return start <= today and (end is None or end >= today)


def load_subjects(session: Session, subject_ids: Iterable[str]) -> dict[str, Subject]:
    """Subjects with everything disclosure may need, in a fixed number of queries."""
    rows = session.scalars(
        sa.select(Subject)
        .where(Subject.id.in_(list(subject_ids)))
        .options(
            selectinload(Subject.identifiers),
            selectinload(Subject.cohorts),
            selectinload(Subject.risk_assessments),
            selectinload(Subject.needs),
            selectinload(Subject.management),
            selectinload(Subject.victim_links),
            selectinload(Subject.referrals),
        )
    ).all()
    return {row.id: row for row in rows}


def record_context(subject: Subject, today: date, policy: PolicySet | None = None) -> RecordContext:
    """What a decision about this subject needs to know, relationships included.

    A closed referral keeps its recipient related to the subject until the retention period
    of the agreements covering the referral's purpose has passed (needs `policy`)."""
    managed = [m for m in subject.management if _active(m.start_date, m.end_date, today)]
    referred = [r for r in subject.referrals if _referral_visible(r, today, policy)]
    return RecordContext(
        cohorts=frozenset(
            c.cohort for c in subject.cohorts if _active(c.start_date, c.end_date, today)
        ),
        area=subject.area_code,
        age=age_on(subject.date_of_birth, today),
        managed_by=frozenset(m.agency.code for m in managed),
        active_referrals_to=frozenset(r.to_agency.code for r in referred),
        accepted_with_consent_by=frozenset(r.to_agency.code for r in referred if _consented(r)),
    )


def _consented(referral: Referral) -> bool:
    return referral.status in CONSENTED_STATUSES and referral.consent.get("status") in CONSENT_OK


def _referral_visible(referral: Referral, today: date, policy: PolicySet | None) -> bool:
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


def full_record(subject: Subject, today: date) -> dict:
    """Every field of the subject resource; `policies.disclose` decides what leaves."""
    latest = subject.risk_assessments[-1] if subject.risk_assessments else None
    identifiers = {
        i.scheme.lower(): i.value
        for i in subject.identifiers
        if i.scheme in ("PNC", "CRN", "NOMIS")
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
        "cohorts": sorted(
            c.cohort for c in subject.cohorts if _active(c.start_date, c.end_date, today)
        ),
        "risk": None
        if latest is None
        else {
            "reoffending_score": latest.reoffending_score,
            "reoffending_band": latest.reoffending_band,
            "serious_harm_level": latest.serious_harm_level,
            "assessed_at": latest.assessed_at,
        },
        "needs": {n.pathway: n.level for n in subject.needs},
        "management": [
            {
                "agency": m.agency.code,
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


def scope_filter(scopes: list[GrantScope], agency_id: int, today: date) -> sa.ColumnElement[bool]:
    """SQL for "some grant's conditions hold": OR over grants of AND over conditions."""
    clauses = [_grant_clause(scope, agency_id, today) for scope in scopes]
    return sa.or_(*clauses) if clauses else sa.false()


def _grant_clause(scope: GrantScope, agency_id: int, today: date) -> sa.ColumnElement[bool]:
    conditions = scope
    parts: list[sa.ColumnElement[bool]] = []
    if conditions.cohorts:
        parts.append(
            sa.exists().where(
                CohortMembership.subject_id == Subject.id,
                CohortMembership.cohort.in_(sorted(conditions.cohorts)),
                CohortMembership.start_date <= today,
                sa.or_(CohortMembership.end_date.is_(None), CohortMembership.end_date >= today),
            )
        )
    if conditions.areas:
        parts.append(Subject.area_code.in_(sorted(conditions.areas)))
    if conditions.min_age is not None:  # born on or before today minus min_age years
        parts.append(Subject.date_of_birth <= _years_before(today, conditions.min_age))
    if conditions.max_age is not None:  # younger than max_age + 1
        parts.append(Subject.date_of_birth > _years_before(today, conditions.max_age + 1))
    if conditions.relationships:
        parts.append(
            sa.or_(*(_relationship(r, agency_id, today) for r in sorted(conditions.relationships)))
        )
    return sa.and_(sa.true(), *parts)


def _relationship(name: str, agency_id: int, today: date) -> sa.ColumnElement[bool]:
    if name == "in_recipient_caseload":
        return sa.exists().where(
            Management.subject_id == Subject.id,
            Management.agency_id == agency_id,
            Management.start_date <= today,
            sa.or_(Management.end_date.is_(None), Management.end_date >= today),
        )
    referral = sa.exists().where(
        Referral.subject_id == Subject.id, Referral.to_agency_id == agency_id
    )
    if name == "active_referral_to_recipient":
        # Lists show open referrals' subjects; closed ones stay readable one by one
        # until retention ends (see record_context).
        return referral.where(Referral.status.in_(OPEN_REFERRAL))
    if name == "accepted_referral_with_consent":
        return referral.where(
            Referral.status.in_(CONSENTED_STATUSES),
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
