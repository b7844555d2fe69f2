"""What each planned record writes: its case, transfer flag and shared facts, worked out in
memory for `writes`; apart from the reads, which all finish before any of this runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.services.caseload.known import _Case, _Person, allocation_kind
from gateway.services.caseload.records import _midnight, reoffending_band
from gateway.services.caseload.results import (
    SUBJECT_UPDATED,
    TRANSFER_FLAGGED,
    SyncingAgency,
    SyncReport,
)
from gateway.services.caseload.writes import _Batch, _flush, _Writes
from gateway.services.changes import NewChange, record_changes

OFFENCE_SOURCE = "caseload"


@dataclass(slots=True)
class _Plan:
    """One record that will be applied."""

    index: int
    record: dict[str, Any]
    digest: str
    subject_id: str
    case: _Case | None
    add_identifiers: list[tuple[str, str]]


def _offence_ref(agency: SyncingAgency, record: dict[str, Any]) -> str:
    """Where a caseload offence came from: one case of one agency (so a resend is not new)."""
    return f"{agency.code}:{record['local_case_id']}"


def _apply(
    session: Session,
    batch: _Batch,
    plans: list[_Plan],
    people: dict[str, _Person],
    known_offences: set[tuple[str, str, date]],
    report: SyncReport,
) -> None:
    """Write the planned records: one executemany per table, then the change feed entries."""
    agency, now = batch.agency, batch.now
    writes = _Writes()
    for plan in plans:  # first the batch's final state: which flags each case now lists
        people[plan.subject_id].listed[agency.id, plan.record["local_case_id"]] = _listed(plan)
    for plan in plans:
        person = people[plan.subject_id]
        created_here = person.new
        if person.new:
            writes.subjects.append(_new_subject(plan, now))
            person.new = False  # a second case for this person in the batch links, not creates
        writes.identifiers.extend(
            {"subject_id": plan.subject_id, "scheme": s, "value": v}
            for s, v in plan.add_identifiers
        )
        changed = _apply_case(batch, plan, person, writes, report)
        shared = _apply_facts(batch, plan, person, writes)
        if shared and not created_here:
            writes.refreshed.add(plan.subject_id)
        others = person.managers - {agency.id}
        if (changed or shared) and others:
            detail = {"by": agency.code, "changed": changed + shared}
            writes.changes.append((SUBJECT_UPDATED, plan.subject_id, others, detail))
    for key in known_offences:
        writes.offences.pop(key, None)  # sent before: recorded once
    _flush(session, writes, people, now)
    record_changes(
        session,
        [
            NewChange(kind, frozenset(audience), subject_id, by_agency_id=agency.id, detail=detail)
            for kind, subject_id, audience, detail in writes.changes
        ],
    )
    report.changes += len(writes.changes)


def _new_subject(plan: _Plan, now: datetime) -> dict[str, Any]:
    record = plan.record
    return {
        "id": plan.subject_id,
        "given_name": record["given_name"],
        "family_name": record["family_name"],
        "date_of_birth": record["date_of_birth"],
        "gender": record.get("gender", "unknown"),
        "area_code": record["area"],
        "created_at": now,
        "updated_at": now,
    }


def _apply_case(
    batch: _Batch, plan: _Plan, person: _Person, writes: _Writes, report: SyncReport
) -> list[str]:
    """Insert or update the case and its transfer flag; returns "case_opened"/"case_closed"."""
    record, case, today = plan.record, plan.case, batch.today
    active = record["status"] == "active"
    was_open = case is not None and case.open_on(today)
    if active:
        end_date = None
    elif case is not None and case.end_date is not None:
        end_date = record.get("end_date", case.end_date)
    else:
        end_date = record.get("end_date", today)
    transfer_to = case.transfer_to if case is not None else None
    if active and record["statutory"]:
        transfer_to = _flag_transfer(batch, plan, person, transfer_to, writes, report)
    report.outcomes[plan.index].transfer_to = transfer_to
    values = {
        "statutory": record["statutory"],
        "offender_manager_ref": record.get("offender_manager_ref"),
        "status": record["status"],
        "end_date": end_date,
        "transfer_to": transfer_to,
        "record_hash": plan.digest,
        "cohorts": sorted(_listed(plan)),
        "updated_at": batch.now,
    }
    if case is None:
        start = record.get("start_date", today)
        writes.case_inserts.append(
            {
                **values,
                "subject_id": plan.subject_id,
                "agency_id": batch.agency.id,
                "local_case_id": record["local_case_id"],
                "start_date": start,
            }
        )
    else:
        start = record.get("start_date", case.start_date)
        writes.case_updates.append({"id": case.id, **values, "start_date": start})
    # An end date is the last day of management, so status says whether the case just closed.
    open_before = was_open and case is not None and case.status == "active"
    if active and start <= today and not open_before:
        return ["case_opened"]
    if not active and open_before:
        return ["case_closed"]
    return []


def _flag_transfer(
    batch: _Batch,
    plan: _Plan,
    person: _Person,
    flagged: str | None,
    writes: _Writes,
    report: SyncReport,
) -> str | None:
    """The case's transfer flag under the allocation rule, recording a change when it moves."""
    risk = plan.record.get("risk") or {}
    target = allocation_kind(risk.get("serious_harm_level"))
    if not batch.probation or target is None:
        return flagged  # not a probation case, or no harm level in this record: flag unchanged
    agency = batch.agency
    wanted = None if target == agency.kind else _counterpart(batch.probation[target], person.area)
    if wanted == flagged:
        return flagged
    # Both ends of the transfer (and of a flag now cleared), and the person's other managers.
    ends = {i for i in map(batch.agency_id_of, (flagged, wanted)) if i is not None}
    detail = {
        "from_agency": agency.code,
        "to_agency": wanted,
        "flag": "set" if wanted else "cleared",
        "previous_to_agency": flagged,
    }
    audience = {agency.id} | ends | person.managers
    writes.changes.append((TRANSFER_FLAGGED, plan.subject_id, audience, detail))
    report.transfers += 1
    return wanted


def _apply_facts(batch: _Batch, plan: _Plan, person: _Person, writes: _Writes) -> list[str]:
    """Cohort flags, risk, needs and offences; returns which shared facts changed."""
    record, subject_id, agency_id = plan.record, plan.subject_id, batch.agency.id
    changed = []
    if _apply_cohorts(batch, plan, person, writes):
        changed.append("cohorts")
    risk = record.get("risk")
    if risk:
        risk_added, risk_changed = _add_risk(person, risk, agency_id)
        if risk_added:
            score = risk.get("reoffending_score")
            writes.risks.append(
                {
                    "subject_id": subject_id,
                    "reoffending_score": score,
                    "reoffending_band": reoffending_band(score) if score is not None else None,
                    "serious_harm_level": risk.get("serious_harm_level"),
                    "assessed_by_agency_id": agency_id,
                    "assessed_at": _midnight(risk["assessed_on"]),
                }
            )
        if risk_changed:
            changed.append("risk")
    need_changed = False
    for pathway, level in sorted((record.get("needs") or {}).items()):
        held = person.needs.get(pathway)
        if held is None or held[1] != level:
            person.needs[pathway] = (held[0] if held else None, level)
            writes.needs[subject_id, pathway] = level
            need_changed = True
    if need_changed:
        changed.append("needs")
    source_ref = _offence_ref(batch.agency, record)
    for offence in record.get("offences") or ():
        key = (source_ref, offence["offence_type"], offence["offence_date"])
        writes.offences[key] = {
            "subject_id": subject_id,
            "offence_type": offence["offence_type"],
            "offence_date": offence["offence_date"],
            "source": OFFENCE_SOURCE,
            "source_ref": source_ref,
            "reported_by_agency_id": agency_id,
            "recorded_at": batch.now,
        }
    return changed


def _listed(plan: _Plan) -> frozenset[str]:
    """The flags a record lists (an absent list lists none, as in the hash)."""
    return frozenset(plan.record.get("cohorts") or ())


def _apply_cohorts(batch: _Batch, plan: _Plan, person: _Person, writes: _Writes) -> bool:
    """Add the flags the record lists and the person lacks; end the flags this agency's sync
    set that none of its cases lists any more. Returns whether the person's flags changed.

    A flag the person already holds is not added again: the agency's listing is kept with its
    case (`Management.cohorts`), so it still counts when the agency that set the flag stops
    listing it. Ending is judged on the batch's final state (`person.listed`, every case of
    the person as it stands after the whole batch, those left out of it or unchanged too), so
    neither the order of the records nor a case missing from the batch decides it. A flag its
    setter drops that another agency's cases still list is handed to that agency (a new row
    from today), not ended: it stays held while anyone lists it. Ending is the only way a flag
    leaves, so the history stays: `end_date` is yesterday, the last day it applied. Flags set
    by other agencies, or not by a sync, are never touched: an agency's export speaks only for
    what that agency said."""
    subject_id, agency_id = plan.subject_id, batch.agency.id
    held_before = set(person.cohorts)
    for cohort in sorted(_listed(plan) - person.cohorts):
        writes.cohorts.append(_membership(batch, plan, person, cohort, agency_id))
        person.cohort_setters.setdefault(cohort, set()).add(agency_id)
        person.cohorts.add(cohort)
    mine = [c for c in sorted(person.cohorts) if agency_id in person.cohort_setters.get(c, ())]
    if not mine:
        return False
    listers: dict[str, set[int]] = {}  # cohort -> agencies whose cases list it
    for (by, _), cohorts in person.listed.items():
        for cohort in cohorts:
            listers.setdefault(cohort, set()).add(by)
    for cohort in mine:
        still = listers.get(cohort, set())
        if agency_id in still:
            continue
        setters = person.cohort_setters[cohort]
        writes.cohort_ends[subject_id, cohort] = agency_id
        setters.discard(agency_id)
        if still and not setters & still:
            heir = min(still)
            writes.cohorts.append(_membership(batch, plan, person, cohort, heir))
            setters.add(heir)
        if not setters:
            person.cohorts.discard(cohort)
    return person.cohorts != held_before


def _membership(
    batch: _Batch, plan: _Plan, person: _Person, cohort: str, set_by: int
) -> dict[str, Any]:
    return {
        "subject_id": plan.subject_id,
        "cohort": cohort,
        "area_code": person.area,
        "start_date": batch.today,
        "end_date": None,
        "set_by_agency_id": set_by,
    }


def _counterpart(candidates: list[tuple[int, str, frozenset[str]]], area: str) -> str | None:
    """The agency of the wanted kind serving the person's area (else the first of that kind)."""
    for _, code, areas in candidates:
        if area in areas:
            return code
    return candidates[0][1] if candidates else None


def _add_risk(person: _Person, risk: dict[str, Any], agency_id: int) -> tuple[bool, bool]:
    """(added, changed): whether this agency has not recorded this assessment yet, and
    whether it changes the person's current (latest) risk. Recorded in `person` if added."""
    at = _midnight(risk["assessed_on"])
    score, level = risk.get("reoffending_score"), risk.get("serious_harm_level")
    if any((a, s, lv, by) == (at, score, level, agency_id) for a, s, lv, by, _ in person.risks):
        return False, False
    latest = max(person.risks, key=lambda r: (r[0], r[4] or 1 << 62), default=None)
    person.risks.append((at, score, level, agency_id, 0))
    changed = latest is None or (at >= latest[0] and (score, level) != (latest[1], latest[2]))
    return True, changed
