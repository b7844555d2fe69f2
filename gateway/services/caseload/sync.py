"""The entry points (sync_caseload, guard_snapshot, end_cases) and a batch's look-ups: the one
module that calls every step, so the order (every read, then the writes) is seen here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.models import Agency
from gateway.services.caseload.apply import OFFENCE_SOURCE, _apply, _offence_ref, _Plan
from gateway.services.caseload.known import (
    PROBATION_KINDS,
    _existing_cases,
    _management,
    _open_cases,
    _Person,
    _probation_agencies,
)
from gateway.services.caseload.records import record_hash
from gateway.services.caseload.resolve import _resolve
from gateway.services.caseload.results import (
    BatchRejected,
    RecordOutcome,
    SnapshotRefused,
    SyncingAgency,
    SyncReport,
)
from gateway.services.caseload.writes import _Batch, _chunks, _end_cases, _offences
from policies.engine import PolicySet


def sync_caseload(
    session: Session,
    agency: SyncingAgency,
    records: list[dict[str, Any]],
    *,
    mode: str,
    atomic: bool,
    confirm_end: bool,
    max_end_share: float,
    policy: PolicySet,
    purpose: str,
    now: datetime,
) -> SyncReport:
    """Apply a batch of the agency's case records; the rules, and why, are in the package docstring.

    Raises `SnapshotRefused` or `BatchRejected` before writing anything. Reads first (a fixed
    number of queries for the batch), then writes (one executemany per table)."""
    report = SyncReport(mode=mode, atomic=atomic, outcomes=[])
    with _planned_per_call(session):
        found = _look_up(
            session, agency, records, mode, confirm_end, max_end_share, policy, purpose, now, report
        )
    if atomic and any(o.result == "rejected" for o in report.outcomes):
        raise BatchRejected(
            "atomic=true and some records were rejected, so none was applied.",
            results=[o.as_dict() for o in report.outcomes if o.result == "rejected"],
            summary=report.counts(),
        )
    batch = _Batch(agency, found.probation, now)
    if found.plans:
        _apply(session, batch, found.plans, found.people, found.known_offences, report)
    if found.ending:
        _end_cases(session, batch, found.ending, found.ending_managers, report)
    return report


@contextmanager
def _planned_per_call(session: Session) -> Iterator[None]:
    """On PostgreSQL, plan the batch's lookups for the values they are given.

    psycopg prepares a statement once it has run it five times, and PostgreSQL may then keep a
    generic plan chosen while the tables were small: a scan of the agency's cases instead of a
    probe of the unique index. A lookup that took milliseconds then takes seconds once the
    caseload has grown, for the life of the connection. The lookups are a handful per batch, so
    planning each is cheap; the setting is transaction-local and the writes that follow keep
    their prepared plans."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    saved = session.execute(sa.text("SELECT current_setting('plan_cache_mode')")).scalar_one()
    session.execute(sa.text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
    yield
    session.execute(sa.text("SELECT set_config('plan_cache_mode', :saved, true)"), {"saved": saved})


@dataclass
class _Found:
    """What the reads of one batch found out."""

    plans: list[_Plan] = field(default_factory=list)
    people: dict[str, _Person] = field(default_factory=dict)
    ending: list[tuple[int, str, str]] = field(default_factory=list)
    ending_managers: dict[str, set[int]] = field(default_factory=dict)
    known_offences: set[tuple[str, str, date]] = field(default_factory=set)
    probation: dict[str, list[tuple[int, str, frozenset[str]]]] = field(default_factory=dict)


def _look_up(
    session: Session,
    agency: SyncingAgency,
    records: list[dict[str, Any]],
    mode: str,
    confirm_end: bool,
    max_end_share: float,
    policy: PolicySet,
    purpose: str,
    now: datetime,
    report: SyncReport,
) -> _Found:
    """Every read a batch needs; fills `report.outcomes` and plans the records to apply."""
    today = now.date()
    found = _Found()
    # One sync per agency at a time (PostgreSQL row lock; SQLite's write lock does this already),
    # so a snapshot's view of the open caseload cannot change under it.
    session.execute(sa.select(Agency.id).where(Agency.id == agency.id).with_for_update())
    local_ids = [r["local_case_id"] for r in records]
    existing = _existing_cases(session, agency.id, local_ids)

    if mode == "snapshot":
        open_cases = _open_cases(session, agency.id, today)
        present = set(local_ids)
        found.ending = [case for case in open_cases if case[1] not in present]
        guard_snapshot(len(found.ending), len(open_cases), max_end_share, confirm_end)

    outcomes: list[RecordOutcome | None] = [None] * len(records)
    pending: list[tuple[int, str]] = []
    for index, record in enumerate(records):
        digest = record_hash(record)
        case = existing.get(record["local_case_id"])
        if case is not None and case.record_hash == digest:
            outcomes[index] = RecordOutcome(
                index, record["local_case_id"], "unchanged", case.subject_id, case.transfer_to
            )
        else:
            pending.append((index, digest))

    if pending:
        found.plans, found.people = _resolve(
            session, agency, records, pending, existing, outcomes, policy, purpose, now, report
        )
    report.outcomes = [o for o in outcomes if o is not None]
    if found.plans and agency.kind in PROBATION_KINDS:
        found.probation = _probation_agencies(session)
    refs = {_offence_ref(agency, p.record) for p in found.plans if p.record.get("offences")}
    if refs:
        found.known_offences = _known_offences(session, refs)
    if found.ending:
        found.ending_managers = _other_managers(
            session, {subject_id for _, _, subject_id in found.ending}, agency.id, today
        )
    return found


def guard_snapshot(ending: int, open_cases: int, max_end_share: float, confirm_end: bool) -> None:
    """Refuse a snapshot that would end more than the allowed share of the open caseload.

    A truncated export looks exactly like a caseload that shrank; only the sender can say
    which, so past the share it has to say so (`confirm_end`)."""
    share = ending / open_cases if open_cases else 0.0
    if ending and share > max_end_share and not confirm_end:
        raise SnapshotRefused(
            f"This snapshot would end {ending} of your {open_cases} open cases "
            f"({share:.0%}), more than the {max_end_share:.0%} allowed without "
            "confirm_end=true. Send your whole caseload, or confirm.",
            would_end=ending,
            open_cases=open_cases,
            max_end_share=max_end_share,
        )


def end_cases(
    session: Session, agency: SyncingAgency, ending: list[tuple[int, str, str]], now: datetime
) -> SyncReport:
    """End these open cases of the agency (a completed snapshot's unseen ones), telling the
    people's other managers; the report carries the ended local ids and the changes made."""
    report = SyncReport(mode="snapshot", atomic=False, outcomes=[])
    if ending:
        managers = _other_managers(
            session, {subject_id for _, _, subject_id in ending}, agency.id, now.date()
        )
        _end_cases(session, _Batch(agency, {}, now), ending, managers, report)
    return report


def _known_offences(session: Session, refs: set[str]) -> set[tuple[str, str, date]]:
    return {
        (ref, offence_type, offence_date)
        for ref, offence_type, offence_date in session.execute(
            sa.select(
                _offences.c.source_ref, _offences.c.offence_type, _offences.c.offence_date
            ).where(_offences.c.source == OFFENCE_SOURCE, _offences.c.source_ref.in_(sorted(refs)))
        )
    }


def _other_managers(
    session: Session, subject_ids: set[str], agency_id: int, today: date
) -> dict[str, set[int]]:
    """The agencies other than this one with a case open today for each of these people."""
    managers: dict[str, set[int]] = {}
    for chunk in _chunks(sorted(subject_ids)):
        for subject_id, manager in session.execute(
            sa.select(_management.c.subject_id, _management.c.agency_id).where(
                _management.c.subject_id.in_(chunk),
                _management.c.agency_id != agency_id,
                _management.c.start_date <= today,
                sa.or_(_management.c.end_date.is_(None), _management.c.end_date >= today),
            )
        ):
            managers.setdefault(subject_id, set()).add(manager)
    return managers
