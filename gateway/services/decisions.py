"""Deciding and disclosing subject records: the policy engine applied to stored rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from gateway.services.pseudonymisation import pseudonyms_for
from gateway.services.registry import get_agency
from gateway.services.subjects import SubjectRecord, full_record, load_subjects, record_context
from policies.disclose import disclose
from policies.engine import Decision, PolicySet, decide
from policies.pseudonyms import Keyring


def decide_on_subject(
    policy: PolicySet,
    agency: str,
    agency_kind: str,
    action: str,
    purpose: str,
    subject: SubjectRecord,
    now: datetime,
) -> Decision:
    return decide(
        policy,
        agency=agency,
        agency_kind=agency_kind,
        action=action,
        resource="subject",
        purpose=purpose,
        record=record_context(subject, now.date(), policy, purpose=purpose),
        now=now,
    )


def disclose_subjects(
    session: Session,
    ring: Keyring,
    agency: str,
    decided: list[tuple[SubjectRecord, Decision]],
    now: datetime,
) -> list[dict]:
    """Each permitted subject reduced to what its decision releases, pseudonyms in place."""
    by_domain: dict[str, list[str]] = {}
    for subject, decision in decided:
        if decision.pseudonym_agreement:
            by_domain.setdefault(decision.pseudonym_agreement, []).append(subject.id)
    pseudonyms: dict[tuple[str, str], str] = {}
    for agreement_id, subject_ids in by_domain.items():
        for subject_id, pseudonym in pseudonyms_for(
            session, ring, agreement_id, agency, subject_ids
        ).items():
            pseudonyms[(agreement_id, subject_id)] = pseudonym
    records = []
    for subject, decision in decided:
        pseudonym = pseudonyms.get((decision.pseudonym_agreement or "", subject.id))
        record = disclose(
            full_record(subject, now.date()), decision, pseudonym=pseudonym, today=now.date()
        )
        record["disclosure"] = {
            "level": decision.level,
            "basis": [f"{agreement}#{grant}" for agreement, grant in decision.basis],
        }
        records.append(record)
    return records


def decide_for_agency(
    session: Session,
    policy: PolicySet,
    agency_code: str,
    action: str,
    resource: str,
    purpose: str,
    subject_id: str | None,
    now: datetime,
) -> Decision:
    """The decision the gateway would make, for `agreements explain`."""
    agency = get_agency(session, agency_code)
    record = None
    if subject_id is not None:
        subject = load_subjects(session, [subject_id]).get(subject_id)
        if subject is None:
            raise LookupError(f"no subject {subject_id}")
        record = record_context(subject, now.date(), policy, purpose=purpose)  # as reads do
    return decide(
        policy,
        agency=agency.code,
        agency_kind=agency.kind,
        action=action,
        resource=resource,
        purpose=purpose,
        record=record,
        now=now,
    )
