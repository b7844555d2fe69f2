"""The change feed's view of a caseload change, per reader: the read path, which shares
nothing with the sync but the agreements, so it imports nothing from it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.models import Agency, Management
from gateway.services.decisions import decide_on_subject, disclose_subjects
from gateway.services.pseudonymisation import pseudonyms_for
from gateway.services.subjects import SubjectRecord, load_subjects, record_context
from policies.disclose import disclose
from policies.engine import Decision, PolicySet, decide
from policies.pseudonyms import Keyring


@dataclass
class CaseViews:
    """What one reader may see of each person its caseload changes are about."""

    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    subjects: dict[str, dict[str, Any]] = field(default_factory=dict)
    fields: set[str] = field(default_factory=set)


def case_views(
    session: Session,
    policy: PolicySet,
    ring: Keyring,
    agency: Agency,
    purpose: str,
    subject_ids: Iterable[str],
    now: datetime,
) -> CaseViews:
    """Each person as the reader's agreements allow now: its own case for them (caseload
    resource) and the person (subject resource), each only where a grant permits it."""
    today = now.date()
    views = CaseViews()
    subjects = load_subjects(session, set(subject_ids))
    if not subjects:
        return views
    own: dict[str, Management] = {}
    for case in session.scalars(
        sa.select(Management)
        .where(Management.agency_id == agency.id, Management.subject_id.in_(sorted(subjects)))
        .order_by(Management.start_date, Management.id)
    ):
        own[case.subject_id] = case  # the latest case wins
    permitted_subjects = []
    for subject_id, subject in sorted(subjects.items()):
        context = record_context(subject, today, policy, purpose=purpose)
        case = own.get(subject_id)
        if case is not None:
            decision = decide(
                policy,
                agency=agency.code,
                agency_kind=agency.kind,
                action="read",
                resource="caseload",
                purpose=purpose,
                record=context,
                now=now,
            )
            if decision.permitted:
                views.cases[subject_id] = _disclose_case(
                    session, ring, agency.code, case, subject, decision, today
                )
                views.fields |= set(decision.fields)
        decision = decide_on_subject(
            policy, agency.code, agency.kind, "read", purpose, subject, now
        )
        if decision.permitted:
            permitted_subjects.append((subject, decision))
            views.fields |= set(decision.fields)
    for (subject, _), record in zip(
        permitted_subjects,
        disclose_subjects(session, ring, agency.code, permitted_subjects, now),
        strict=True,
    ):
        views.subjects[subject.id] = record
    return views


def _disclose_case(
    session: Session,
    ring: Keyring,
    agency_code: str,
    case: Management,
    subject: SubjectRecord,
    decision: Decision,
    today: date,
) -> dict[str, Any]:
    record = {
        "local_case_id": case.local_case_id,
        "subject_ref": subject.id,
        "status": case.status,
        "statutory": case.statutory,
        "offender_manager_ref": case.offender_manager_ref,
        "risk": subject.risk(),
        "needs": {n.pathway: n.level for n in subject.needs},
        "cohorts": subject.active_cohorts(today),
        "updated_at": case.updated_at,
    }
    pseudonym = None
    if decision.pseudonym_agreement:
        pseudonym = pseudonyms_for(
            session, ring, decision.pseudonym_agreement, agency_code, [subject.id]
        )[subject.id]
    return disclose(record, decision, pseudonym=pseudonym, today=today)
