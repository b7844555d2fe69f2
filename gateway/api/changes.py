"""The partner change feed: poll with the cursor you were given; never miss, never repeat.

One table serves every feed (see `services.changes`); this view shows the caller's entries,
each rendered as the caller's agreements allow at the time of reading. The caseload feed
(`api.caseload`) is the same feed filtered to other kinds, with the same cursors.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import g

from gateway import extensions
from gateway.access import current_caller, note_access, note_permitted, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.models import Agency, Outcome, Referral
from gateway.pagination import decode_cursor, encode_cursor
from gateway.problems import Problem
from gateway.services.caseload import CASELOAD_KINDS, case_views
from gateway.services.changes import changes_for
from gateway.services.pseudonymisation import keyring
from gateway.services.referral_disclosure import decide_on_referral, outcome_view, referral_view
from gateway.services.referrals import mark_overdue
from schemas.referrals import ChangePageSchema, ChangesQuery

blp = ApiBlueprint(
    "changes", __name__, url_prefix="/api/v1/changes", description="Partner change feed"
)

REFERRAL_KINDS = (
    "referral.received",
    "referral.status_changed",
    "referral.consent_recorded",
    "referral.overdue",
    "outcome.added",
)


@blp.route("", methods=["GET"])
@blp.arguments(ChangesQuery, location="query")
@blp.response(200, ChangePageSchema)
@requires_scope("referrals:read")
def list_changes(query: dict) -> dict:
    """Referrals received, status changes and outcomes for your agency, in commit order."""
    caller = current_caller()
    return render_feed(caller.agency_id, query, REFERRAL_KINDS)


def render_feed(
    agency_id: int, query: dict, kinds: tuple[str, ...], *, caseload: bool = False
) -> dict:
    """The caller's entries after the cursor, each rendered as its agreements allow now.

    `caseload`: the caseload feed, whose entries also show the caller's own case and the person
    (caseload changes, and outcomes the caller may see: which of its cases an outcome is about
    is what makes it useful there). An outcome entry the caller may not see says only that
    something happened: its detail (the outcome's type) goes with the outcome."""
    note_access(action="list", resource_type="change")
    session = extensions.database().session
    now = datetime.now(UTC)
    mark_overdue(session, agency_id, now)
    position = decode_cursor(query.get("since"), "p")
    if position is not None and type(position["p"]) is not int:
        raise Problem(400, "bad-cursor", detail="The cursor is not one this feed issued.")
    after = position["p"] if position else 0
    agency = session.get(Agency, agency_id)
    policy, ring = extensions.agreements().current(), keyring(extensions.keys())
    items, subjects, decisions = [], set(), []
    changes = changes_for(session, agency_id, after, query["limit"], kinds)
    with_case: list[tuple[dict, str]] = []  # entries to show the case and person with
    for change in changes:
        item = {
            "cursor": encode_cursor({"p": change.position}),
            "kind": change.kind,
            "occurred_at": change.occurred_at,
            "detail": change.detail,
            "referral": None,
            "outcome": None,
        }
        referral = session.get(Referral, change.referral_id) if change.referral_id else None
        decision = (
            decide_on_referral(policy, agency, "read", g.purpose, referral, now)
            if referral
            else None
        )
        if decision is not None and decision.permitted:
            item["referral"] = referral_view(
                session, policy, ring, agency, g.purpose, referral, decision, now
            )
            subjects.add(referral.subject_id)
            decisions.append(decision)
        outcome_shown = False
        if referral is not None and change.outcome_id:
            # A managing agency may see an outcome without seeing the referral it came from.
            outcome_decision = decide_on_referral(
                policy, agency, "read", g.purpose, referral, now, resource="outcome"
            )
            if outcome_decision.permitted:
                outcome = session.get(Outcome, change.outcome_id)
                item["outcome"] = outcome_view(outcome, referral, outcome_decision, now)
                outcome_shown = True
                subjects.add(referral.subject_id)
                decisions.append(outcome_decision)
        if change.referral_id and item["referral"] is None and not outcome_shown:
            item["detail"] = {}  # the change's own words (a status, a consent) say too much
        if change.subject_id and (change.kind in CASELOAD_KINDS or (caseload and outcome_shown)):
            with_case.append((item, change.subject_id))
        items.append(item)
        after = change.position
    about = {subject_id for _, subject_id in with_case}
    views = case_views(session, policy, ring, agency, g.purpose, about, now) if about else None
    for item, subject_id in with_case:
        item["case"] = views.cases.get(subject_id)
        item["subject"] = views.subjects.get(subject_id)
        if item["case"] is not None or item["subject"] is not None:
            subjects.add(subject_id)
    note_permitted(decisions, subjects).details["after"] = after
    if views is not None:
        note_access(fields=views.fields)
    return {"items": items, "next_cursor": encode_cursor({"p": after})}
