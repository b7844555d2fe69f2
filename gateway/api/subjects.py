"""Subjects: the people partners manage, released only as the caller's agreements allow.

Every view reads as the request path: caller -> decide -> load -> disclose -> note -> respond.
A record the caller may not see is answered exactly like one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import g

from gateway import extensions
from gateway.access import current_caller, note_access, note_permitted, reads_only, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.models import Subject
from gateway.pagination import open_cursor, seal_cursor
from gateway.problems import Problem
from gateway.services.decisions import decide_on_subject, disclose_subjects
from gateway.services.pseudonymisation import keyring, resolve_pseudonym
from gateway.services.subjects import (
    find_by_identifier,
    in_cohort,
    load_subjects,
    scope_filter,
)
from policies.engine import list_scope
from policies.identifiers import IdentifierError, normalise_identifier
from schemas.subjects import SubjectListQuery, SubjectPageSchema, SubjectSchema, SubjectSearchBody

blp = ApiBlueprint(
    "subjects", __name__, url_prefix="/api/v1/subjects", description="People IOM partners manage"
)

NOT_FOUND = "No such subject."


def not_found(reason: str) -> Problem:
    note_access(decision="deny", reason=reason)
    return Problem(404, detail=NOT_FOUND)


@blp.route("", methods=["GET"])
@blp.arguments(SubjectListQuery, location="query")
@blp.response(200, SubjectPageSchema)
@reads_only
@requires_scope("subjects:read")
def list_subjects(query: dict) -> dict:
    """Subjects in the caller's scope, filtered in SQL by the permitting grants."""
    caller = current_caller()
    now = datetime.now(UTC)
    note_access(action="list", resource_type="subject", details=_query_details(query))
    policy = extensions.agreements().current()  # one policy for the whole request
    scopes = list_scope(
        policy,
        agency=caller.agency_code,
        agency_kind=caller.agency_kind,
        action="list",
        resource="subject",
        purpose=g.purpose,
        now=now,
    )
    session = extensions.database().session
    cursor_key = extensions.keys().cursor_key()
    after = open_cursor(query.get("cursor"), cursor_key, "after")
    statement = sa.select(Subject.id).where(
        scope_filter(scopes, caller.agency_id, now.date(), g.purpose)
    )
    if "area" in query:
        statement = statement.where(Subject.area_code == query["area"])
    if "cohort" in query:
        statement = statement.where(in_cohort([query["cohort"]], now.date()))
    if "updated_since" in query:
        statement = statement.where(Subject.updated_at >= query["updated_since"])
    if after:
        statement = statement.where(Subject.id > str(after["after"]))
    ids = session.scalars(statement.order_by(Subject.id).limit(query["limit"] + 1)).all()
    page, more = ids[: query["limit"]], len(ids) > query["limit"]

    subjects = load_subjects(session, page)
    decided = []
    for subject_id in page:
        subject = subjects[subject_id]
        decision = decide_on_subject(
            policy, caller.agency_code, caller.agency_kind, "list", g.purpose, subject, now
        )
        if decision.permitted:  # the SQL scope and the decision agree; this is the backstop
            decided.append((subject, decision))
    items = disclose_subjects(session, keyring(extensions.keys()), caller.agency_code, decided, now)
    _note_disclosures(decided)
    return {
        "items": items,
        # Sealed: the last id of a pseudonymised page is the id behind a pseudonym on it.
        "next_cursor": seal_cursor({"after": page[-1]}, cursor_key) if more and page else None,
    }


@blp.route("/<string:ref>", methods=["GET"])
@blp.response(200, SubjectSchema)
@reads_only
@requires_scope("subjects:read")
def get_subject(ref: str) -> dict:
    """One subject by internal id, or by the pseudonym the caller was given."""
    caller = current_caller()
    now = datetime.now(UTC)
    note_access(action="read", resource_type="subject")
    session = extensions.database().session
    subject_id, issued_under = _resolve_ref(ref, caller.agency_code, now)
    subject = load_subjects(session, [subject_id]).get(subject_id) if subject_id else None
    if subject is None:
        raise not_found("no_such_subject")
    note_access(subject_ids=[subject.id])
    policy = extensions.agreements().current()
    decision = decide_on_subject(
        policy, caller.agency_code, caller.agency_kind, "read", g.purpose, subject, now
    )
    if not decision.permitted:
        raise not_found(decision.reasons[0].code if decision.reasons else "no_agreement")
    if decision.pseudonym_agreement != issued_under:
        # Address people as you were given them: by internal id where you see them
        # identified, by the pseudonym of the agreement you are reading under, not another's
        # (which would link the separate pseudonyms of two agreements).
        raise not_found("reference_form_not_granted")
    [record] = disclose_subjects(
        session, keyring(extensions.keys()), caller.agency_code, [(subject, decision)], now
    )
    _note_disclosures([(subject, decision)])
    return record


@blp.route("/search", methods=["POST"])
@blp.arguments(SubjectSearchBody)
@blp.response(200, SubjectSchema)
@reads_only
@requires_scope("subjects:search")
def search_subject(body: dict) -> dict:
    """Find a person by PNC, CRN or NOMIS number, sent in the body so it stays out of URLs.

    Only grants at the identified level permit a search."""
    caller = current_caller()
    now = datetime.now(UTC)
    note_access(action="search", resource_type="subject", details={"scheme": body["scheme"]})
    try:
        value = normalise_identifier(body["scheme"], body["value"])
    except IdentifierError as error:
        raise Problem(422, detail=str(error), errors={"json": {"value": [str(error)]}}) from None
    session = extensions.database().session
    subject_id = find_by_identifier(session, body["scheme"], value)
    subject = load_subjects(session, [subject_id]).get(subject_id) if subject_id else None
    if subject is None:
        raise not_found("no_such_subject")
    note_access(subject_ids=[subject.id])
    policy = extensions.agreements().current()
    decision = decide_on_subject(
        policy, caller.agency_code, caller.agency_kind, "search", g.purpose, subject, now
    )
    # Only identified grants permit a search: the searcher already holds an identifier, so
    # anything released in answer is tied to it (a pseudonymised grant without `ref` has no
    # pseudonym agreement, hence the level check).
    if not decision.permitted or decision.pseudonym_agreement or decision.level != "identified":
        raise not_found(decision.reasons[0].code if decision.reasons else "search_not_identified")
    [record] = disclose_subjects(
        session, keyring(extensions.keys()), caller.agency_code, [(subject, decision)], now
    )
    _note_disclosures([(subject, decision)])
    return record


def _resolve_ref(ref: str, agency: str, now: datetime) -> tuple[str | None, str | None]:
    """(subject id, the agreement a pseudonym was issued under; None for an internal id)."""
    if ref.startswith("psn"):
        grace = timedelta(days=extensions.config().pseudonym_grace_days)
        resolved = resolve_pseudonym(extensions.database().session, ref, agency, grace, now)
        return resolved if resolved else (None, None)
    return (ref if len(ref) == 36 else None), None


def _note_disclosures(decided: list) -> None:
    note_permitted([d for _, d in decided], [subject.id for subject, _ in decided])


def _query_details(query: dict) -> dict:
    return {
        k: str(v) for k, v in query.items() if k in ("cohort", "area", "updated_since", "limit")
    }
