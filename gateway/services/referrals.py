"""The referral exchange: create, move through the lifecycle, record consent and outcomes.

Plain functions over a session. They enforce the lifecycle and who may take each step; what
each party may *see* is the policy engine's business (see `referral_context`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session

from gateway.models import (
    Agency,
    Management,
    Offence,
    Outcome,
    Referral,
    ReferralTransition,
)
from gateway.services.changes import record_change
from gateway.services.subjects import CONSENTED_STATUSES, SubjectRecord, record_context
from gateway.services.subjects import OPEN_REFERRAL as OPEN
from policies.engine import RecordContext

# transition -> (states it may leave, state it enters, which party may take it)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "accept": (("submitted",), "accepted", "recipient"),
    "decline": (("submitted",), "declined", "recipient"),
    "engage": (("accepted",), "engaged", "recipient"),
    "complete": (("engaged",), "completed", "recipient"),
    "disengage": (("engaged",), "disengaged", "recipient"),
    "withdraw": (OPEN, "withdrawn", "referrer"),
}
OUTCOME_STATUSES = ("accepted", "engaged", "completed", "disengaged")


class ReferralError(Exception):
    """A request the lifecycle refuses; `status` is the HTTP status it maps to."""

    status = 422

    def __init__(self, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.members = members


class InvalidTransition(ReferralError):
    status = 409


class StaleReferral(ReferralError):
    status = 412


class NotYourStep(ReferralError):
    status = 403


@dataclass(frozen=True)
class Service:
    code: str
    title: str
    decide_within_working_days: int


@cache
def services() -> dict[str, Service]:
    data = yaml.safe_load((Path(__file__).parent.parent / "data" / "services.yaml").read_text())
    return {code: Service(code, **spec) for code, spec in data.items()}


def working_days_after(start: datetime, days: int) -> datetime:
    """`days` working days (Monday-Friday) after `start`, at the same time of day."""
    current = start
    while days > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            days -= 1
    return current


def allowed_transitions(status: str) -> list[str]:
    return [name for name, (sources, _, _) in TRANSITIONS.items() if status in sources]


def etag(referral: Referral) -> str:
    return f'"{referral.id[:8]}-v{referral.version}"'


def is_overdue(referral: Referral, now: datetime) -> bool:
    return referral.status == "submitted" and referral.decision_due < now


def _audience(referral: Referral) -> set[int]:
    return {referral.from_agency_id, referral.to_agency_id}


def _tell(
    session: Session,
    referral: Referral,
    kind: str,
    detail: dict[str, Any],
    *,
    by_agency_id: int | None = None,
    also: frozenset[int] | set[int] = frozenset(),
    outcome_id: str | None = None,
) -> None:
    """Put a change to this referral in both parties' feeds (and `also` others')."""
    record_change(
        session,
        kind,
        audience=_audience(referral) | also,
        subject_id=referral.subject_id,
        referral_id=referral.id,
        outcome_id=outcome_id,
        by_agency_id=by_agency_id,
        detail=detail,
    )


def _log_step(
    session: Session,
    referral: Referral,
    from_status: str | None,
    to_status: str,
    agency: Agency,
    *,
    reason: str | None = None,
    on_behalf_of: str | None,
    now: datetime,
) -> None:
    """One line of the referral's history: when, by which agency, on whose behalf."""
    session.add(
        ReferralTransition(
            referral_id=referral.id,
            from_status=from_status,
            to_status=to_status,
            reason=reason,
            agency_id=agency.id,
            on_behalf_of=on_behalf_of,
            at=now,
        )
    )


def _reloaded(session: Session, referral: Referral) -> Referral:
    session.flush()
    session.refresh(referral)
    return referral


def _managers(session: Session, subject_id: str, now: datetime) -> set[int]:
    """Agencies managing the person today: told of outcomes, as their agreements allow."""
    today = now.date()
    return set(
        session.scalars(
            sa.select(Management.agency_id).where(
                Management.subject_id == subject_id,
                Management.start_date <= today,
                sa.or_(Management.end_date.is_(None), Management.end_date >= today),
            )
        )
    )


def create_referral(
    session: Session,
    *,
    from_agency: Agency,
    to_agency: Agency,
    subject: SubjectRecord,
    purpose: str,
    request: dict[str, Any],
    on_behalf_of: str | None,
    now: datetime,
) -> Referral:
    service = services()[request["service"]]
    latest = subject.latest_risk
    shared = request.get("share_risk", [])
    risk = {}
    if latest is not None:
        if "serious_harm" in shared:
            risk["serious_harm_level"] = latest.serious_harm_level
        if "reoffending" in shared:
            risk["reoffending_band"] = latest.reoffending_band
    consent = dict(request["consent"])
    consent.setdefault("recorded_at", now)
    referral = Referral(
        subject_id=subject.id,
        from_agency_id=from_agency.id,
        to_agency_id=to_agency.id,
        purpose=purpose,
        service=service.code,
        pathways=sorted(set(request["pathways"])),
        reasons=sorted(set(request["reasons"])),
        summary=request.get("summary"),
        urgency=request["urgency"],
        risk_shared=risk,
        consent=_jsonable(consent),
        status="submitted",
        version=1,
        created_at=now,
        updated_at=now,
        decision_due=working_days_after(now, service.decide_within_working_days),
    )
    referral.from_agency, referral.to_agency = from_agency, to_agency
    session.add(referral)
    session.flush()
    _log_step(session, referral, None, "submitted", from_agency, on_behalf_of=on_behalf_of, now=now)
    _tell(
        session, referral, "referral.received", {"status": "submitted"}, by_agency_id=from_agency.id
    )
    return _reloaded(session, referral)


def _update_if_unchanged(
    session: Session, referral: Referral, seen_version: int, now: datetime, **values: Any
) -> None:
    """Apply `values` only if the referral is still at the version the caller saw.

    One conditional UPDATE: of two racing caseworkers exactly one matches the version."""
    updated = session.execute(
        sa.update(Referral)
        .where(Referral.id == referral.id, Referral.version == seen_version)
        .values(version=Referral.version + 1, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if updated.rowcount != 1:
        raise StaleReferral("the referral has changed since you read it; fetch it again")


def apply_transition(
    session: Session,
    referral: Referral,
    transition: str,
    *,
    agency: Agency,
    seen_version: int,
    reason: str | None,
    on_behalf_of: str | None,
    now: datetime,
) -> Referral:
    """Move the referral on, if this agency may take this step from the current state.

    The update is conditional on the version the caller saw, so of two racing caseworkers
    exactly one succeeds and the other gets 412.
    """
    if transition not in TRANSITIONS:
        raise InvalidTransition(
            f"{transition} is not a referral transition",
            allowed=allowed_transitions(referral.status),
        )
    sources, target, party = TRANSITIONS[transition]
    party_id = referral.to_agency_id if party == "recipient" else referral.from_agency_id
    if agency.id != party_id:
        raise NotYourStep(f"only the {party} may {transition} a referral")
    if referral.status not in sources:
        raise InvalidTransition(
            f"a {referral.status} referral cannot be {target}",
            allowed=allowed_transitions(referral.status),
        )
    if transition == "decline" and not reason:
        raise ReferralError("declining needs a reason code")
    if transition == "accept" and referral.consent.get("status") == "refused":
        raise InvalidTransition(
            "the person refused consent; record consent before accepting",
            allowed=[t for t in allowed_transitions(referral.status) if t != "accept"],
        )
    closed = now if target not in OPEN else None
    _update_if_unchanged(session, referral, seen_version, now, status=target, closed_at=closed)
    _log_step(
        session,
        referral,
        referral.status,
        target,
        agency,
        reason=reason,
        on_behalf_of=on_behalf_of,
        now=now,
    )
    _tell(
        session,
        referral,
        "referral.status_changed",
        {"from": referral.status, "to": target},
        by_agency_id=agency.id,
    )
    return _reloaded(session, referral)


def record_consent(
    session: Session,
    referral: Referral,
    consent: dict[str, Any],
    *,
    agency: Agency,
    seen_version: int,
    now: datetime,
) -> Referral:
    """Either party records the person's consent (or the lawful basis that makes it unneeded)."""
    if agency.id not in _audience(referral):
        raise NotYourStep("only the referrer or the recipient records consent")
    if referral.status not in OPEN:
        raise InvalidTransition("consent cannot change on a closed referral", allowed=[])
    value = _jsonable({**consent, "recorded_at": consent.get("recorded_at", now)})
    _update_if_unchanged(session, referral, seen_version, now, consent=value)
    _tell(
        session,
        referral,
        "referral.consent_recorded",
        {"consent": value["status"]},
        by_agency_id=agency.id,
    )
    return _reloaded(session, referral)


def add_outcome(
    session: Session, referral: Referral, request: dict[str, Any], *, agency: Agency, now: datetime
) -> Outcome:
    if agency.id != referral.to_agency_id:
        raise NotYourStep("outcomes are reported by the provider the person was referred to")
    if referral.status not in OUTCOME_STATUSES:
        raise InvalidTransition(f"no outcomes on a {referral.status} referral", allowed=[])
    if request["occurred_on"] > now.date():
        raise ReferralError("an outcome cannot be in the future")
    if request["occurred_on"] < referral.created_at.date():
        raise ReferralError("an outcome cannot precede the referral")
    outcome = Outcome(
        referral_id=referral.id,
        type=request["type"],
        occurred_on=request["occurred_on"],
        detail=_jsonable(request.get("detail", {})),
        recorded_by_agency_id=agency.id,
        recorded_at=now,
    )
    session.add(outcome)
    session.flush()
    if outcome.type == "further_offence_reported":
        session.add(
            Offence(
                subject_id=referral.subject_id,
                offence_type=outcome.detail["offence_type"],
                offence_date=outcome.occurred_on,
                source="outcome",
                source_ref=outcome.id,
                reported_by_agency_id=agency.id,
            )
        )
    _tell(
        session,
        referral,
        "outcome.added",
        {"type": outcome.type},
        by_agency_id=agency.id,
        also=_managers(session, referral.subject_id, now),
        outcome_id=outcome.id,
    )
    return outcome


def mark_overdue(session: Session, agency_id: int, now: datetime) -> int:
    """Tell referrers, once, about their referrals nobody accepted or declined in time.

    Two feed reads at once both find a referral not yet told about: each claims it with an
    update conditional on that, and only the one whose update took it tells (on PostgreSQL
    the second update waits for the first to commit, then finds the condition false)."""
    found = session.scalars(
        sa.select(Referral).where(
            Referral.from_agency_id == agency_id,
            Referral.status == "submitted",
            Referral.decision_due < now,
            Referral.overdue_notified_at.is_(None),
        )
    ).all()
    if not found:
        return 0
    claimed = set(
        session.scalars(
            sa.update(Referral)
            .where(
                Referral.id.in_([referral.id for referral in found]),
                Referral.overdue_notified_at.is_(None),
            )
            .values(overdue_notified_at=now)
            .returning(Referral.id)
        )
    )
    overdue = [referral for referral in found if referral.id in claimed]
    for referral in overdue:
        _tell(
            session,
            referral,
            "referral.overdue",
            {"decision_due": referral.decision_due.isoformat()},
        )
    return len(overdue)


def referral_context(referral: Referral, subject: SubjectRecord, today: date) -> RecordContext:
    """The subject's context plus this referral's relationship to its recipient."""
    base = record_context(subject, today, purpose=None)  # its own referral relationships below
    consented = referral.status in CONSENTED_STATUSES and referral.consent.get("status") in (
        "given",
        "not_required",
    )
    # A closed referral stays visible to its recipient until the agreement's retention
    # period has passed (checked by the caller against the permitting agreement).
    return RecordContext(
        cohorts=base.cohorts,
        area=base.area,
        age=base.age,
        managed_by=base.managed_by,
        active_referrals_to=frozenset({referral.to_agency.code}),
        accepted_with_consent_by=frozenset({referral.to_agency.code}) if consented else frozenset(),
    )


def referral_record(referral: Referral, now: datetime) -> dict[str, Any]:
    """Every field of the referral resource; `policies.disclose` decides what leaves."""
    return {
        "ref": referral.id,
        "subject_ref": referral.subject_id,
        "from_agency": referral.from_agency.code,
        "to_agency": referral.to_agency.code,
        "service": referral.service,
        "pathways": list(referral.pathways),
        "reasons": list(referral.reasons),
        "summary": referral.summary,
        "urgency": referral.urgency,
        "risk_shared": dict(referral.risk_shared),
        "consent": dict(referral.consent),
        "status": referral.status,
        "history": [
            {
                "status": t.to_status,
                "from_status": t.from_status,
                "at": t.at,
                "agency": t.agency.code,
                "reason": t.reason,
                "on_behalf_of": t.on_behalf_of,
            }
            for t in referral.transitions
        ],
        "overdue": is_overdue(referral, now),
        "created_at": referral.created_at,
        "updated_at": referral.updated_at,
    }


def outcome_record(outcome: Outcome, referral: Referral) -> dict[str, Any]:
    return {
        "ref": outcome.id,
        "referral_ref": referral.id,
        "type": outcome.type,
        "occurred_on": outcome.occurred_on,
        "detail": dict(outcome.detail),
        "recorded_by": outcome.recorded_by.code,
        "recorded_at": outcome.recorded_at,
    }


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            v.astimezone(UTC).isoformat()
            if isinstance(v, datetime)
            else v.isoformat()
            if isinstance(v, date)
            else v
        )
        for k, v in value.items()
    }
