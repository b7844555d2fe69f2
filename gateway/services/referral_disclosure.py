"""What one agency may see of a referral and its outcomes: the policy engine applied to the
exchange, the subject embedded as far as the subject grants allow, and retention honoured."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from gateway.models import Agency, Outcome, Referral
from gateway.services.decisions import decide_on_subject, disclose_subjects
from gateway.services.pseudonymisation import pseudonyms_for
from gateway.services.referrals import (
    TRANSITIONS,
    allowed_transitions,
    outcome_record,
    referral_context,
    referral_record,
)
from gateway.services.subjects import OPEN_REFERRAL, SubjectRecord, load_subjects, retention_end
from policies.disclose import disclose
from policies.engine import Decision, PolicySet, Reason, decide
from policies.pseudonyms import Keyring


def decide_on_referral(
    policy: PolicySet,
    agency: Agency,
    action: str,
    purpose: str,
    referral: Referral,
    now: datetime,
    resource: str = "referral",
) -> Decision:
    """The decision for a party to the referral acting for the referral's purpose; a refusal
    naming why for anyone else, for another purpose, or after retention.

    A referral and its outcomes were shared for the referral's purpose only: a party using
    them under another purpose (another agreement the parties share, whose conditions may
    hold when the referral's own no longer do) would be purpose creep no lawful basis covers.
    The exception is outcomes for an agency that is not a party but manages the person: it
    may see them under its own agreement (relationship in_recipient_caseload)."""
    def refused(code: str, message: str) -> Decision:
        reason = Reason("-", "-", code, message)
        return Decision(False, agency.code, action, resource, purpose, reasons=(reason,))

    party = agency.id in (referral.from_agency_id, referral.to_agency_id)
    if party and purpose != referral.purpose:
        return refused("not_the_referral_purpose", f"the referral is for {referral.purpose}")
    if not party and resource != "outcome":
        return refused("not_a_party", f"{agency.code} is not a party to the referral")
    subject = load_subjects(Session.object_session(referral), [referral.subject_id])[
        referral.subject_id
    ]
    decision = decide(
        policy,
        agency=agency.code,
        agency_kind=agency.kind,
        action=action,
        resource=resource,
        purpose=purpose,
        record=referral_context(referral, subject, now.date()),
        now=now,
    )
    if not decision.permitted:
        return decision
    closed_for_recipient = (
        agency.id == referral.to_agency_id and referral.status not in OPEN_REFERRAL
    )
    if (
        closed_for_recipient
        and referral.closed_at is not None
        and now.date() > retention_end(policy, referral.purpose, referral.closed_at.date())
    ):
        return refused("retention_ended", "the referral closed beyond its retention period")
    return decision


def may_refer(
    policy: PolicySet,
    referrer: Agency,
    recipient: Agency,
    purpose: str,
    subject: SubjectRecord,
    consent: dict,
    now: datetime,
) -> bool:
    """Whether one agreement lets the referrer create this referral *and* the recipient
    receive it, for this person and purpose: both ends of an exchange need a lawful basis."""
    probe = Referral(
        to_agency=recipient, status="submitted", consent=consent, subject_id=subject.id
    )
    context = referral_context(probe, subject, now.date())
    sending, receiving = (
        decide(
            policy,
            agency=agency.code,
            agency_kind=agency.kind,
            action=action,
            resource="referral",
            purpose=purpose,
            record=context,
            now=now,
        )
        for agency, action in ((referrer, "create"), (recipient, "read"))
    )
    shared = {a for a, _ in sending.basis} & {a for a, _ in receiving.basis}
    return sending.permitted and receiving.permitted and bool(shared)


def referral_view(
    session: Session,
    policy: PolicySet,
    ring: Keyring,
    agency: Agency,
    purpose: str,
    referral: Referral,
    decision: Decision,
    now: datetime,
) -> dict:
    subject = load_subjects(session, [referral.subject_id])[referral.subject_id]
    pseudonym = None
    if decision.pseudonym_agreement:
        pseudonym = pseudonyms_for(
            session, ring, decision.pseudonym_agreement, agency.code, [subject.id]
        )[subject.id]
    record = disclose(
        referral_record(referral, now), decision, pseudonym=pseudonym, today=now.date()
    )
    subject_decision = decide_on_subject(
        policy, agency.code, agency.kind, "read", purpose, subject, now
    )
    # Embedded only in the same form as the referral's subject_ref: a pseudonym of another
    # agreement (or one beside an internal id) would link what the agreements keep apart.
    if (
        subject_decision.permitted
        and subject_decision.pseudonym_agreement == decision.pseudonym_agreement
    ):
        [record["subject"]] = disclose_subjects(
            session, ring, agency.code, [(subject, subject_decision)], now
        )
    party = "recipient" if agency.id == referral.to_agency_id else "referrer"
    record["allowed_transitions"] = [
        t for t in allowed_transitions(referral.status) if TRANSITIONS[t][2] == party
    ]
    record["disclosure"] = {
        "level": decision.level,
        "basis": [f"{agreement}#{grant}" for agreement, grant in decision.basis],
    }
    return record


def outcome_view(outcome: Outcome, referral: Referral, decision: Decision, now: datetime) -> dict:
    return disclose(outcome_record(outcome, referral), decision, pseudonym=None, today=now.date())
