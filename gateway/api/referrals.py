"""Referrals and outcomes: the exchange between police, probation, YOTs and providers.

Each view is the request path: caller -> resolve -> decide -> act -> disclose -> note.
A referral the caller may not see is answered exactly like one that does not exist.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import g, request

from gateway import extensions, idempotency
from gateway.access import current_caller, note_access, note_permitted, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.models import Agency, Referral
from gateway.oauth import Caller
from gateway.openapi import (
    IDEMPOTENCY_IN_PROGRESS,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_REUSED,
    IF_MATCH_HEADER,
    IF_MATCH_MISSING,
    IF_MATCH_STALE,
    RETRY_AFTER,
    problem_responses,
)
from gateway.pagination import decode_cursor, encode_cursor
from gateway.problems import Problem
from gateway.services import referrals as lifecycle
from gateway.services.decisions import decide_on_subject
from gateway.services.pseudonymisation import keyring, resolve_pseudonym
from gateway.services.referral_disclosure import (
    decide_on_referral,
    may_refer,
    outcome_view,
    referral_view,
)
from gateway.services.referrals import ReferralError, etag
from gateway.services.subjects import load_subjects
from policies.engine import Decision
from schemas.referrals import (
    ConsentSchema,
    OutcomeCreateSchema,
    OutcomeListSchema,
    OutcomeSchema,
    ReferralCreateSchema,
    ReferralListQuery,
    ReferralPageSchema,
    ReferralSchema,
    TransitionSchema,
)

blp = ApiBlueprint(
    "referrals", __name__, url_prefix="/api/v1/referrals", description="Referrals and outcomes"
)

NOT_FOUND = "No such referral."
ETAG_HEADERS = {"ETag": {"schema": {"type": "string"}, "description": "Pass back in If-Match"}}


def _now() -> datetime:
    return datetime.now(UTC)


def _agency(caller: Caller) -> Agency:
    return extensions.database().session.get(Agency, caller.agency_id)


def _policy():  # type: ignore[no-untyped-def]
    return extensions.agreements().current()


def _load(referral_id: str) -> Referral | None:
    if len(referral_id) != 36:
        return None
    return extensions.database().session.get(Referral, referral_id)


def _visible(caller: Caller, referral_id: str, action: str):  # type: ignore[no-untyped-def]
    """(referral, decision) for a referral the caller may `action`, else a 404 like no referral."""
    referral = _load(referral_id)
    if referral is None:
        note_access(decision="deny", reason="no_such_referral")
        raise Problem(404, detail=NOT_FOUND)
    note_access(subject_ids=[referral.subject_id], details={"referral": referral.id})
    decision = decide_on_referral(_policy(), _agency(caller), action, g.purpose, referral, _now())
    if not decision.permitted:
        note_access(decision="deny", reason=_refusal_code(decision))
        raise Problem(404, detail=NOT_FOUND)
    return referral, decision


def _refusal_code(decision: Decision) -> str:
    return decision.reasons[0].code if decision.reasons else "no_agreement"


def _respond(caller: Caller, referral: Referral, decision, status: int = 200):  # type: ignore[no-untyped-def]
    now = _now()
    record = referral_view(
        extensions.database().session,
        _policy(),
        keyring(extensions.keys()),
        _agency(caller),
        g.purpose,
        referral,
        decision,
        now,
    )
    note_permitted([decision])
    return record, status, {"ETag": etag(referral)}


def _respond_current(caller: Caller, referral: Referral):  # type: ignore[no-untyped-def]
    """The referral after a change, as the caller may now see it."""
    decision = decide_on_referral(_policy(), _agency(caller), "read", g.purpose, referral, _now())
    return _respond(caller, referral, decision)


def _lifecycle_problem(error: ReferralError) -> Problem:
    note_access(decision="deny", reason=type(error).__name__)
    return Problem(error.status, detail=error.detail, **error.members)


@blp.route("", methods=["POST"])
@blp.arguments(ReferralCreateSchema)
@blp.response(201, ReferralSchema, headers=ETAG_HEADERS)
@blp.doc(parameters=[IDEMPOTENCY_KEY_HEADER])
@problem_responses(
    blp,
    {
        409: IDEMPOTENCY_IN_PROGRESS[0].upper() + IDEMPOTENCY_IN_PROGRESS[1:],
        422: "Body failed validation, to_agency is not an agency you can refer to, or "
        + IDEMPOTENCY_KEY_REUSED,
    },
    headers={409: RETRY_AFTER},
)
@requires_scope("referrals:write")
def create_referral(body: dict) -> Any:
    """Refer a person to another agency.

    Send `Idempotency-Key`: a retry never makes a second referral."""
    caller = current_caller()
    note_access(action="create", resource_type="referral")
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        stored = idempotency.claim(
            caller.agency_id, key, idempotency.fingerprint(g.purpose, request.get_json())
        )
        if stored is not None:
            # The replay discloses the referral again: only while the caller may still read
            # it (an agreement may have ended since), and logged with the person it names.
            _, decision = _visible(caller, str(stored.body.get("ref", "")), "read")
            note_permitted([decision]).reason = "idempotent_replay"
            return idempotency.replay(stored)

    session = extensions.database().session
    now = _now()
    subject = _resolve_subject(caller, body["subject_ref"], now)
    recipient = session.scalar(sa.select(Agency).where(Agency.code == body["to_agency"]))
    if recipient is None or recipient.suspended_at is not None or recipient.id == caller.agency_id:
        raise Problem(
            422,
            detail="to_agency is not an agency you can refer to.",
            errors={"json": {"to_agency": ["unknown or unavailable agency"]}},
        )
    if not may_refer(
        _policy(), _agency(caller), recipient, g.purpose, subject, body["consent"], now
    ):
        note_access(decision="deny", reason="no_referral_agreement", subject_ids=[subject.id])
        raise Problem(
            403,
            "no-referral-agreement",
            detail="No agreement lets you refer this person to that agency for this purpose.",
        )
    referral = lifecycle.create_referral(
        session,
        from_agency=_agency(caller),
        to_agency=recipient,
        subject=subject,
        purpose=g.purpose,
        request=body,
        on_behalf_of=request.headers.get("X-On-Behalf-Of"),
        now=now,
    )
    note_access(
        subject_ids=[subject.id], details={"referral": referral.id, "to_agency": recipient.code}
    )
    decision = decide_on_referral(_policy(), _agency(caller), "read", g.purpose, referral, now)
    record, status, headers = _respond(caller, referral, decision, 201)
    headers["Location"] = f"/api/v1/referrals/{referral.id}"
    if key is not None:
        serialised = json.loads(json.dumps(ReferralSchema().dump(record)))
        idempotency.remember(caller.agency_id, key, status, serialised, headers)
    return record, status, headers


def _resolve_subject(caller: Caller, ref: str, now: datetime):  # type: ignore[no-untyped-def]
    """The subject the caller means, if it may see that person under any of its agreements.

    A referrer refers people it knows from its own work (for the police, under the IOM
    agreement), so visibility under any purpose is enough here; the referral decision that
    follows is made under the declared purpose."""
    session = extensions.database().session
    subject_id, issued_under = ref, None
    if ref.startswith("psn"):
        grace = timedelta(days=extensions.config().pseudonym_grace_days)
        subject_id, issued_under = resolve_pseudonym(
            session, ref, caller.agency_code, grace, now
        ) or ("", None)
    subject = (
        load_subjects(session, [subject_id]).get(subject_id) if len(subject_id) == 36 else None
    )
    if subject is not None:
        note_access(subject_ids=[subject.id])
        for purpose in sorted(_policy().purposes):
            decision = decide_on_subject(
                _policy(), caller.agency_code, caller.agency_kind, "read", purpose, subject, now
            )
            # In the form the caller was given the person: a pseudonym only under the
            # agreement it was issued for (another's would link two agreements' pseudonyms).
            if decision.permitted and decision.pseudonym_agreement == issued_under:
                return subject
    note_access(decision="deny", reason="subject_not_visible")
    raise Problem(404, detail="No such subject.")


@blp.route("", methods=["GET"])
@blp.arguments(ReferralListQuery, location="query")
@blp.response(200, ReferralPageSchema)
@requires_scope("referrals:read")
def list_referrals(query: dict) -> dict:
    """Referrals you made (outbound) or received (inbound), newest changes last."""
    caller = current_caller()
    note_access(
        action="list",
        resource_type="referral",
        details={k: str(v) for k, v in query.items() if k != "cursor"},
    )
    session = extensions.database().session
    mine = {
        "inbound": [Referral.to_agency_id == caller.agency_id],
        "outbound": [Referral.from_agency_id == caller.agency_id],
    }
    direction = query.get("direction")
    scope = mine[direction] if direction else [sa.or_(*mine["inbound"], *mine["outbound"])]
    statement = sa.select(Referral).where(*scope, Referral.purpose == g.purpose)
    if "status" in query:
        statement = statement.where(Referral.status == query["status"])
    if "updated_since" in query:
        statement = statement.where(Referral.updated_at >= query["updated_since"])
    after = decode_cursor(query.get("cursor"), "after")
    if after:
        statement = statement.where(Referral.id > str(after["after"]))
    rows = session.scalars(statement.order_by(Referral.id).limit(query["limit"] + 1)).all()
    page, more = rows[: query["limit"]], len(rows) > query["limit"]
    now, agency = _now(), _agency(caller)
    items, released = [], []
    for referral in page:
        decision = decide_on_referral(_policy(), agency, "list", g.purpose, referral, now)
        if decision.permitted:
            view = referral_view(
                session,
                _policy(),
                keyring(extensions.keys()),
                agency,
                g.purpose,
                referral,
                decision,
                now,
            )
            items.append(view)
            released.append((referral.subject_id, decision))
    note_permitted([d for _, d in released], [subject_id for subject_id, _ in released])
    return {"items": items, "next_cursor": encode_cursor({"after": page[-1].id}) if more else None}


@blp.route("/<string:referral_id>", methods=["GET"])
@blp.response(200, ReferralSchema, headers=ETAG_HEADERS)
@requires_scope("referrals:read")
def get_referral(referral_id: str) -> Any:
    """The referral's current status and full history of transitions."""
    caller = current_caller()
    note_access(action="read", resource_type="referral")
    referral, decision = _visible(caller, referral_id, "read")
    return _respond(caller, referral, decision)


def _seen_version(referral: Referral) -> int:
    supplied = request.headers.get("If-Match")
    if supplied is None:
        note_access(decision="deny", reason="if_match_required")
        raise Problem(428, detail="Send If-Match with the referral's ETag.")
    if supplied.strip() != etag(referral):
        note_access(decision="deny", reason="stale_etag")
        raise Problem(412, detail="The referral has changed since you read it; fetch it again.")
    return referral.version


@blp.route("/<string:referral_id>/consent", methods=["POST"])
@blp.arguments(ConsentSchema)
@blp.response(200, ReferralSchema, headers=ETAG_HEADERS)
@blp.doc(parameters=[IF_MATCH_HEADER])
@problem_responses(
    blp,
    {
        409: "The referral is closed: its consent can no longer change",
        412: IF_MATCH_STALE,
        428: IF_MATCH_MISSING,
    },
)
@requires_scope("referrals:write")
def record_consent(consent: dict, referral_id: str) -> Any:
    """Record the person's consent, or the lawful basis that makes consent unnecessary."""
    caller = current_caller()
    note_access(action="update", resource_type="referral", details={"step": "consent"})
    referral, _ = _visible(caller, referral_id, "update")
    try:
        referral = lifecycle.record_consent(
            extensions.database().session,
            referral,
            consent,
            agency=_agency(caller),
            seen_version=_seen_version(referral),
            now=_now(),
        )
    except ReferralError as error:
        raise _lifecycle_problem(error) from None
    return _respond_current(caller, referral)


@blp.route("/<string:referral_id>/<string:transition>", methods=["POST"])
@blp.arguments(TransitionSchema)
@blp.response(200, ReferralSchema, headers=ETAG_HEADERS)
@blp.doc(parameters=[IF_MATCH_HEADER])
@problem_responses(
    blp,
    {
        409: "The step is not allowed from the referral's current status (`allowed` lists "
        "the steps that are)",
        412: IF_MATCH_STALE,
        428: IF_MATCH_MISSING,
    },
)
@requires_scope("referrals:write")
def transition_referral(body: dict, referral_id: str, transition: str) -> Any:
    """accept, decline (with a reason), engage, complete, disengage; withdraw (referrer only).

    Requires If-Match; an invalid step is 409 with the allowed next steps, a stale ETag 412."""
    caller = current_caller()
    note_access(action="update", resource_type="referral", details={"step": transition[:20]})
    referral, _ = _visible(caller, referral_id, "update")
    if transition not in lifecycle.TRANSITIONS:
        note_access(decision="deny", reason="unknown_transition")
        raise Problem(
            404,
            detail=f"Referrals have no step {transition[:20]!r}.",
            allowed=lifecycle.allowed_transitions(referral.status),
        )
    try:
        referral = lifecycle.apply_transition(
            extensions.database().session,
            referral,
            transition,
            agency=_agency(caller),
            seen_version=_seen_version(referral),
            reason=body.get("reason"),
            on_behalf_of=request.headers.get("X-On-Behalf-Of"),
            now=_now(),
        )
    except ReferralError as error:
        raise _lifecycle_problem(error) from None
    return _respond_current(caller, referral)


@blp.route("/<string:referral_id>/outcomes", methods=["POST"])
@blp.arguments(OutcomeCreateSchema)
@blp.response(201, OutcomeSchema)
@blp.doc(parameters=[IDEMPOTENCY_KEY_HEADER])
@problem_responses(
    blp,
    {
        409: "The referral's status takes no outcomes, or " + IDEMPOTENCY_IN_PROGRESS,
        422: "Body failed validation, the date is in the future or before the referral, or "
        + IDEMPOTENCY_KEY_REUSED,
    },
    headers={409: RETRY_AFTER},
)
@requires_scope("referrals:write")
def add_outcome(body: dict, referral_id: str) -> Any:
    """Report engagement, completion or a further offence, with its date.

    Send `Idempotency-Key`: a retry never records the outcome twice (a further offence
    counted twice would inflate the reoffending figures)."""
    caller = current_caller()
    note_access(action="create", resource_type="outcome")
    referral, _ = _visible(caller, referral_id, "read")
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        request_fingerprint = idempotency.fingerprint(
            g.purpose, {"referral": referral.id, "outcome": request.get_json()}
        )
        stored = idempotency.claim(caller.agency_id, key, request_fingerprint)
        if stored is not None:
            return idempotency.replay(stored)
    decision = decide_on_referral(
        _policy(), _agency(caller), "create", g.purpose, referral, _now(), resource="outcome"
    )
    if not decision.permitted:
        note_access(decision="deny", reason="outcome_not_granted")
        raise Problem(
            403, detail="Your agreements do not let you report outcomes on this referral."
        )
    try:
        outcome = lifecycle.add_outcome(
            extensions.database().session, referral, body, agency=_agency(caller), now=_now()
        )
    except ReferralError as error:
        raise _lifecycle_problem(error) from None
    note_permitted([decision]).details.update(referral=referral.id, outcome=body["type"])
    record = outcome_view(outcome, referral, decision, _now())
    if key is not None:
        serialised = json.loads(json.dumps(OutcomeSchema().dump(record)))
        idempotency.remember(caller.agency_id, key, 201, serialised, {})
    return record, 201


@blp.route("/<string:referral_id>/outcomes", methods=["GET"])
@blp.response(200, OutcomeListSchema)
@requires_scope("referrals:read")
def list_outcomes(referral_id: str) -> dict:
    """Outcomes of a referral: for its parties, and for agencies managing the person whose
    agreements grant outcomes (they see these without seeing the referral itself)."""
    caller = current_caller()
    note_access(action="list", resource_type="outcome")
    referral = _load(referral_id)
    decision = None
    if referral is not None:
        note_access(subject_ids=[referral.subject_id], details={"referral": referral.id})
        decision = decide_on_referral(
            _policy(), _agency(caller), "list", g.purpose, referral, _now(), resource="outcome"
        )
    if decision is None or not decision.permitted:
        note_access(decision="deny", reason="outcomes_not_granted")
        raise Problem(404, detail=NOT_FOUND)
    note_permitted([decision])
    return {"items": [outcome_view(o, referral, decision, _now()) for o in referral.outcomes]}
