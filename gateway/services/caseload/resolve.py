"""Who each record is about and whether the agreements allow it: the identity and
permission rules, kept apart because a mistake here merges two people's records."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.models import new_uuid
from gateway.services.caseload.apply import _Plan
from gateway.services.caseload.known import _Case, _identifier_owners, _people, _Person
from gateway.services.caseload.records import _strong_identifiers
from gateway.services.caseload.results import (
    RecordOutcome,
    SyncingAgency,
    SyncReport,
    _conflict,
    problem,
)
from gateway.services.subjects import age_on
from policies.engine import Decision, PolicySet, RecordContext, decide, list_scope

OWN_CASELOAD = frozenset({"in_recipient_caseload"})


def _resolve(
    session: Session,
    agency: SyncingAgency,
    records: list[dict[str, Any]],
    pending: list[tuple[int, str]],
    existing: dict[str, _Case],
    outcomes: list[RecordOutcome | None],
    policy: PolicySet,
    purpose: str,
    now: datetime,
    report: SyncReport,
) -> tuple[list[_Plan], dict[str, _Person]]:
    """Link each pending record to a person, or reject it; decide it against the agreements."""
    today = now.date()
    strong = {index: _strong_identifiers(records[index]) for index, _ in pending}
    owners = _identifier_owners(session, {pair for ids in strong.values() for pair in ids.items()})
    candidates = set(owners.values()) | {
        existing[records[i]["local_case_id"]].subject_id
        for i, _ in pending
        if records[i]["local_case_id"] in existing
    }
    people = _people(session, candidates, today)
    batch_decisions = _batch_decisions(policy, agency, purpose, now)
    plans = []
    for index, digest in pending:
        record = records[index]
        local_id = record["local_case_id"]
        case = existing.get(local_id)
        identifiers = strong[index]
        rejection, subject_id = _link(record, identifiers, case, owners, people)
        if rejection is None and record["area"] not in agency.areas:
            rejection = problem(
                422,
                "area-not-served",
                "Area not served",
                f"Your agency is not registered for area {record['area']}.",
            )
        if rejection is None:
            rejection = _ends_before_it_starts(record, case, today)
        person = people.get(subject_id) if subject_id else None
        if rejection is None:
            action = "create" if case is None else "update"
            decision = batch_decisions[action] or decide(
                policy,
                agency=agency.code,
                agency_kind=agency.kind,
                action=action,
                resource="caseload",
                purpose=purpose,
                record=_context(record, person, agency, today),
                now=now,
            )
            if decision.permitted:
                report.basis.update(decision.basis)
                report.levels.add(decision.level or "")
            else:
                rejection = problem(
                    403,
                    "no-caseload-agreement",
                    "Not permitted",
                    f"No agreement lets you {action} this case for this purpose.",
                    reason=decision.reasons[0].code if decision.reasons else "no_agreement",
                )
        if rejection is not None:
            outcomes[index] = RecordOutcome(index, local_id, "rejected", problem=rejection)
            continue
        if subject_id is None:  # nobody matched: a new person, known from now on in this batch
            subject_id = new_uuid()
            person = _Person(record["date_of_birth"], record["area"], new=True)
            people[subject_id] = person
        assert person is not None
        added = [(s, v) for s, v in sorted(identifiers.items()) if s not in person.identifiers]
        for scheme, value in added:
            person.identifiers[scheme] = {value}
            owners[scheme, value] = subject_id
        plans.append(_Plan(index, record, digest, subject_id, case, added))
        outcomes[index] = RecordOutcome(
            index, local_id, "updated" if case else "created", subject_id
        )
    return plans, people


def _ends_before_it_starts(
    record: dict[str, Any], case: _Case | None, today: date
) -> dict[str, Any] | None:
    """A case may not end before it starts. The schema checks the record's own two dates;
    without a start_date the start is the stored case's, or today for a new case."""
    end = record.get("end_date")
    start = record.get("start_date") or (case.start_date if case is not None else today)
    if end is None or end >= start:
        return None
    return problem(
        422,
        "end-before-start",
        "Ends before it starts",
        f"end_date {end.isoformat()} is before the case's start {start.isoformat()}: "
        "send the case's start_date.",
    )


def _batch_decisions(
    policy: PolicySet, agency: SyncingAgency, purpose: str, now: datetime
) -> dict[str, Decision | None]:
    """Per action, one decision for every record of the batch, when one is exact.

    It is when no grant in force looks at the record beyond "the case is in the caller's own
    caseload", which every case an agency submits is; otherwise (None) each record is decided
    on its own facts. Deciding 1,000 records one by one costs more than all the lookups."""
    decisions: dict[str, Decision | None] = {}
    for action in ("create", "update"):
        scopes = list_scope(
            policy,
            agency=agency.code,
            agency_kind=agency.kind,
            action=action,
            resource="caseload",
            purpose=purpose,
            now=now,
        )
        record_free = all(
            not (s.cohorts or s.areas or s.min_age is not None or s.max_age is not None)
            and s.relationships <= OWN_CASELOAD
            for s in scopes
        )
        decisions[action] = (
            decide(
                policy,
                agency=agency.code,
                agency_kind=agency.kind,
                action=action,
                resource="caseload",
                purpose=purpose,
                record=RecordContext(managed_by=frozenset({agency.code})),
                now=now,
            )
            if record_free
            else None
        )
    return decisions


def _link(
    record: dict[str, Any],
    identifiers: dict[str, str],
    case: _Case | None,
    owners: dict[tuple[str, str], str],
    people: dict[str, _Person],
) -> tuple[dict[str, Any] | None, str | None]:
    """(rejection, subject id): the person a record is about, by strong identifiers only."""
    matched = {owners[pair] for pair in identifiers.items() if pair in owners}
    if len(matched) > 1:
        return _conflict(
            "identifiers_disagree",
            "The case's identifiers belong to different people; correct them before resending.",
        ), None
    if case is not None and matched and matched != {case.subject_id}:
        return _conflict(
            "case_linked_elsewhere",
            "This case is linked to one person and an identifier in it belongs to another.",
        ), None
    subject_id = case.subject_id if case is not None else next(iter(matched), None)
    if subject_id is None:
        return None, None
    person = people[subject_id]
    for scheme, value in identifiers.items():
        held = person.identifiers.get(scheme)
        if held and value not in held:
            return _conflict(
                "identifier_differs",
                f"The person this case is linked to already has a different {scheme}.",
            ), None
    if case is None and person.date_of_birth != record["date_of_birth"]:
        return _conflict(
            "date_of_birth_differs",
            "An identifier matches a person whose date of birth differs; check the identifiers.",
        ), None
    return None, subject_id


def _context(
    record: dict[str, Any], person: _Person | None, agency: SyncingAgency, today: date
) -> RecordContext:
    """The record as the agreements see it once applied: the caller manages this case."""
    cohorts = set(record.get("cohorts") or ())
    if person is not None:
        cohorts |= person.cohorts
    born = person.date_of_birth if person is not None else record["date_of_birth"]
    return RecordContext(
        cohorts=frozenset(cohorts),
        area=person.area if person is not None else record["area"],
        age=age_on(born, today),
        managed_by=frozenset({agency.code}),
    )
