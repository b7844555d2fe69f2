"""Caseload sync: the partners' picture of who is managed by whom, pushed in batches.

Plain functions over a session and plain data (records as `schemas.caseload` loads them).

Rules, and why:

* **Upsert by (agency, local case id).** The agency's own case id is the only key its system
  is sure of; the gateway's subject id is what the sync *finds out*.
* **Identity on strong identifiers only.** A case is linked to an existing person only through
  a PNC, CRN or NOMIS number, never on name and date of birth (common names and shared
  birthdays would merge two people's records, the worst failure a sharing gateway can have).
  Conflicts are reported for the record and nothing of it is applied: identifiers of one case
  that belong to different people (`identifiers_disagree`), an identifier that belongs to
  somebody other than the person the case is already linked to (`case_linked_elsewhere`), a
  person who already holds a different number in that scheme (`identifier_differs`), and, when
  a new case is linked to a known person, a different date of birth (`date_of_birth_differs`:
  the one use of the name/date-of-birth fields besides creating a new person's record). A
  record matching nobody creates a person, in the record's `area` (which the agency must serve).
* **Unchanged records touch nothing.** Each case keeps the hash of the normalised record last
  applied; a record with the same hash is reported `unchanged` after one query for the batch.
* **Bulk, not per record.** A batch costs a fixed number of queries (existing cases, the
  identifiers it names, those people's facts) and one executemany per table written.
* **Shared facts.** A cohort flag the record lists is added (as set by this agency); a flag
  this agency's sync set earlier that its record no longer lists is ended (end date
  yesterday: history is kept). Flags set by other agencies, or outside caseload sync, are
  never ended by this agency's export: it speaks only for what this agency said. Needs are
  upserted per pathway; a risk assessment is added when this agency has not already recorded
  the same one.
* **Allocation.** NPS takes the higher-risk cases: an active statutory CRC case whose risk of
  serious harm is high or very high is flagged for transfer to NPS, an NPS case whose risk is
  low or medium is flagged to CRC, and a flag whose reason went away is cleared. Each change
  of flag is a `caseload.transfer_flagged` change for both agencies.
* **Changes.** A case opened or closed, a cohort flag added, or risk or needs changed is a
  `caseload.subject_updated` change for the other agencies managing the person; the change
  itself carries no personal data (the feed renders the person as each reader may see them).
* **Snapshots** end the agency's open cases missing from the snapshot, behind a guard: ending
  more than `max_end_share` of the open caseload needs `confirm_end`, so a truncated export
  cannot wipe a caseload. `mode=snapshot` is a snapshot of one batch; a larger caseload is sent
  in a snapshot session of many batches (`gateway.services.snapshots`), completed once, with
  the same guard (`guard_snapshot`) and the same ending (`end_cases`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.models import (
    Agency,
    CohortMembership,
    Management,
    Need,
    Offence,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
    new_uuid,
)
from gateway.services.changes import NewChange, record_changes
from gateway.services.decisions import decide_on_subject, disclose_subjects
from gateway.services.pseudonymisation import pseudonyms_for
from gateway.services.subjects import SubjectRecord, age_on, load_subjects, record_context
from policies.disclose import disclose
from policies.engine import Decision, PolicySet, RecordContext, decide, list_scope
from policies.pseudonyms import Keyring

SUBJECT_UPDATED = "caseload.subject_updated"
TRANSFER_FLAGGED = "caseload.transfer_flagged"
CASELOAD_KINDS = (SUBJECT_UPDATED, TRANSFER_FLAGGED)
# Bump when the normalised form or its encoding changes: every case re-applies once.
HASH_VERSION = "caseload/2"  # 2: encoded by orjson (UTF-8, not \u escapes)
HIGH_HARM = frozenset({"high", "very_high"})
PROBATION_KINDS = ("nps", "crc")
OWN_CASELOAD = frozenset({"in_recipient_caseload"})
MAX_PARAMETERS = 5000  # values bound in one statement (SQLite allows 32,766)
OFFENCE_SOURCE = "caseload"
PROBLEM_PREFIX = "urn:iom-gateway:problem:"

_management = Management.__table__
_subjects = Subject.__table__
_identifiers = SubjectIdentifier.__table__
_risks = RiskAssessment.__table__
_needs = Need.__table__
_cohorts = CohortMembership.__table__
_offences = Offence.__table__


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncingAgency:
    id: int
    code: str
    kind: str
    areas: frozenset[str]


@dataclass(slots=True)
class RecordOutcome:
    index: int
    local_case_id: str
    result: str  # created, updated, unchanged, rejected
    subject_id: str | None = None
    transfer_to: str | None = None
    problem: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "local_case_id": self.local_case_id,
            "result": self.result,
            "subject_ref": self.subject_id,
            "transfer_to": self.transfer_to,
            "problem": self.problem,
        }


@dataclass
class SyncReport:
    mode: str
    atomic: bool
    outcomes: list[RecordOutcome]
    ended: list[str] = field(default_factory=list)
    ended_subjects: set[str] = field(default_factory=set)
    transfers: int = 0
    changes: int = 0
    basis: set[tuple[str, str]] = field(default_factory=set)
    levels: set[str] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("created", "updated", "unchanged", "rejected"), 0)
        for outcome in self.outcomes:
            counts[outcome.result] += 1
        return {
            "received": len(self.outcomes),
            **counts,
            "ended": len(self.ended),
            "transfers_flagged": self.transfers,
        }

    @property
    def touched(self) -> set[str]:
        """Every person the batch linked, changed or ended a case for (for the audit event)."""
        linked = {o.subject_id for o in self.outcomes if o.subject_id and o.result != "rejected"}
        return linked | self.ended_subjects

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "atomic": self.atomic,
            "summary": self.counts(),
            "results": [o.as_dict() for o in self.outcomes],
            "ended": self.ended,
        }


class CaseloadError(Exception):
    """A batch refused as a whole; nothing of it is applied."""

    status = 422
    slug = "caseload-refused"

    def __init__(self, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.members = members


class SnapshotRefused(CaseloadError):
    status = 409
    slug = "snapshot-would-end-too-many"


class BatchRejected(CaseloadError):
    slug = "batch-rejected"


def problem(status: int, slug: str, title: str, detail: str, **members: Any) -> dict[str, Any]:
    """An RFC 9457 problem object for one record of a batch."""
    return {
        "type": PROBLEM_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **members,
    }


def _conflict(kind: str, detail: str) -> dict[str, Any]:
    return problem(409, "identity-conflict", "Identity conflict", detail, conflict=kind)


# --- normalised records -------------------------------------------------------------------


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the normalised record: same case content, same hash, however it was spelt.

    Identifiers arrive normalised from the schema; lists whose order carries no meaning are
    sorted here, and absent optional fields hash like their defaults."""
    normal = {
        **record,
        "cohorts": sorted(record.get("cohorts") or ()),
        "needs": record.get("needs") or {},
        "offences": sorted(
            (o["offence_type"], o["offence_date"].isoformat()) for o in record.get("offences") or ()
        ),
        "risk": record.get("risk") or None,
    }
    # orjson: compact, sorted keys, dates as ISO strings; several times the stdlib's speed,
    # which a batch of 1,000 records notices.
    return hashlib.sha256(
        orjson.dumps([HASH_VERSION, normal], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def reoffending_band(score: int) -> str:
    """The police risk-matrix bands (as the demo data and partners' systems use them)."""
    if score < 25:
        return "low"
    if score < 50:
        return "medium"
    if score < 75:
        return "high"
    return "very_high"


def _strong_identifiers(record: dict[str, Any]) -> dict[str, str]:
    return {scheme.upper(): value for scheme, value in record["identifiers"].items()}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# --- what the database already knows ------------------------------------------------------


@dataclass
class _Case:
    id: int
    subject_id: str
    record_hash: str | None
    status: str
    start_date: date
    end_date: date | None
    transfer_to: str | None

    def open_on(self, today: date) -> bool:
        return self.start_date <= today and (self.end_date is None or self.end_date >= today)


@dataclass(slots=True)
class _Person:
    """One subject's facts the sync reads and keeps current while it works through a batch."""

    date_of_birth: date
    area: str
    identifiers: dict[str, set[str]] = field(default_factory=dict)  # scheme -> values held
    cohorts: set[str] = field(default_factory=set)
    # cohort -> the agencies whose sync set its current membership (None: set otherwise)
    cohort_setters: dict[str, set[int | None]] = field(default_factory=dict)
    # (assessed_at, score, harm level, assessing agency id, row id); row id 0 = added now
    risks: list[tuple[datetime, int | None, str | None, int, int]] = field(default_factory=list)
    needs: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    managers: set[int] = field(default_factory=set)
    new: bool = False


def _existing_cases(session: Session, agency_id: int, local_ids: list[str]) -> dict[str, _Case]:
    rows = session.execute(
        sa.select(
            _management.c.local_case_id,
            _management.c.id,
            _management.c.subject_id,
            _management.c.record_hash,
            _management.c.status,
            _management.c.start_date,
            _management.c.end_date,
            _management.c.transfer_to,
        ).where(_management.c.agency_id == agency_id, _management.c.local_case_id.in_(local_ids))
    )
    return {row[0]: _Case(*row[1:]) for row in rows}


def _open_cases(session: Session, agency_id: int, today: date) -> list[tuple[int, str, str]]:
    """(id, local case id, subject id) of the agency's active cases, open today."""
    return [
        (case_id, local_id, subject_id)
        for case_id, local_id, subject_id, _ in session.execute(open_cases_query(agency_id, today))
    ]


def open_cases_query(
    agency_id: int, today: date, seen: sa.ColumnElement[bool] | None = None
) -> sa.Select:
    """The agency's active cases open today: (id, local case id, subject id, seen), where
    `seen` is a per-case condition (a snapshot's seen cases) or always false."""
    return (
        sa.select(
            _management.c.id,
            _management.c.local_case_id,
            _management.c.subject_id,
            seen if seen is not None else sa.false(),
        )
        .where(
            _management.c.agency_id == agency_id,
            _management.c.status == "active",
            _management.c.start_date <= today,
            sa.or_(_management.c.end_date.is_(None), _management.c.end_date >= today),
        )
        .order_by(_management.c.id)
    )


def _identifier_owners(
    session: Session, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    by_scheme: dict[str, list[str]] = {}
    for scheme, value in wanted:
        by_scheme.setdefault(scheme, []).append(value)
    if not by_scheme:
        return {}
    clauses = [
        sa.and_(_identifiers.c.scheme == scheme, _identifiers.c.value.in_(sorted(values)))
        for scheme, values in sorted(by_scheme.items())
    ]
    rows = session.execute(
        sa.select(_identifiers.c.scheme, _identifiers.c.value, _identifiers.c.subject_id).where(
            sa.or_(*clauses)
        )
    )
    return {(scheme, value): subject_id for scheme, value, subject_id in rows}


def _people(session: Session, subject_ids: set[str], today: date) -> dict[str, _Person]:
    """The facts of these subjects, in one query per table."""
    if not subject_ids:
        return {}
    ids = sorted(subject_ids)
    people = {
        sid: _Person(born, area)
        for sid, born, area in session.execute(
            sa.select(_subjects.c.id, _subjects.c.date_of_birth, _subjects.c.area_code).where(
                _subjects.c.id.in_(ids)
            )
        )
    }
    for sid, scheme, value in session.execute(
        sa.select(_identifiers.c.subject_id, _identifiers.c.scheme, _identifiers.c.value).where(
            _identifiers.c.subject_id.in_(ids), _identifiers.c.scheme.in_(("PNC", "CRN", "NOMIS"))
        )
    ):
        people[sid].identifiers.setdefault(scheme, set()).add(value)
    for sid, cohort, set_by in session.execute(
        sa.select(_cohorts.c.subject_id, _cohorts.c.cohort, _cohorts.c.set_by_agency_id).where(
            _cohorts.c.subject_id.in_(ids),
            _cohorts.c.start_date <= today,
            sa.or_(_cohorts.c.end_date.is_(None), _cohorts.c.end_date >= today),
        )
    ):
        people[sid].cohorts.add(cohort)
        people[sid].cohort_setters.setdefault(cohort, set()).add(set_by)
    for sid, at, score, level, by, row_id in session.execute(
        sa.select(
            _risks.c.subject_id,
            _risks.c.assessed_at,
            _risks.c.reoffending_score,
            _risks.c.serious_harm_level,
            _risks.c.assessed_by_agency_id,
            _risks.c.id,
        ).where(_risks.c.subject_id.in_(ids))
    ):
        people[sid].risks.append((at, score, level, by, row_id))
    for sid, pathway, level, row_id in session.execute(
        sa.select(_needs.c.subject_id, _needs.c.pathway, _needs.c.level, _needs.c.id).where(
            _needs.c.subject_id.in_(ids)
        )
    ):
        people[sid].needs[pathway] = (row_id, level)
    for sid, agency_id in session.execute(
        sa.select(_management.c.subject_id, _management.c.agency_id).where(
            _management.c.subject_id.in_(ids),
            _management.c.start_date <= today,
            sa.or_(_management.c.end_date.is_(None), _management.c.end_date >= today),
        )
    ):
        people[sid].managers.add(agency_id)
    return people


def _probation_agencies(session: Session) -> dict[str, list[tuple[int, str, frozenset[str]]]]:
    """Unsuspended NPS and CRC agencies: the two ends a transfer flag can point at."""
    found: dict[str, list[tuple[int, str, frozenset[str]]]] = {k: [] for k in PROBATION_KINDS}
    for agency_id, code, kind, areas in session.execute(
        sa.select(Agency.id, Agency.code, Agency.kind, Agency.areas)
        .where(Agency.kind.in_(PROBATION_KINDS), Agency.suspended_at.is_(None))
        .order_by(Agency.code)
    ):
        found[kind].append((agency_id, code, frozenset(areas or ())))
    return found


def allocation_kind(harm_level: str | None) -> str | None:
    """Which probation provider should hold a case: NPS the higher-risk cases, CRC the rest."""
    if harm_level is None:
        return None
    return "nps" if harm_level in HIGH_HARM else "crc"


# --- the sync -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """One record that will be applied."""

    index: int
    record: dict[str, Any]
    digest: str
    subject_id: str
    case: _Case | None
    add_identifiers: list[tuple[str, str]]


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
    """Apply a batch of the agency's case records; see the module docstring for the rules.

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


def _offence_ref(agency: SyncingAgency, record: dict[str, Any]) -> str:
    """Where a caseload offence came from: one case of one agency (so a resend is not new)."""
    return f"{agency.code}:{record['local_case_id']}"


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


@dataclass
class _Writes:
    """Rows a batch writes, gathered so each table takes one executemany."""

    subjects: list[dict[str, Any]] = field(default_factory=list)
    identifiers: list[dict[str, Any]] = field(default_factory=list)
    case_inserts: list[dict[str, Any]] = field(default_factory=list)
    case_updates: list[dict[str, Any]] = field(default_factory=list)
    risks: list[dict[str, Any]] = field(default_factory=list)
    needs: dict[tuple[str, str], str] = field(default_factory=dict)
    cohorts: list[dict[str, Any]] = field(default_factory=list)
    cohort_ends: dict[tuple[str, str], int] = field(default_factory=dict)  # -> setting agency
    offences: dict[tuple[str, str, date], dict[str, Any]] = field(default_factory=dict)
    refreshed: set[str] = field(default_factory=set)  # known people whose shared facts changed
    changes: list[tuple[str, str, set[int], dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class _Batch:
    """What every record of one batch is applied with."""

    agency: SyncingAgency
    probation: dict[str, list[tuple[int, str, frozenset[str]]]]
    now: datetime

    @property
    def today(self) -> date:
        return self.now.date()

    def agency_id_of(self, code: str | None) -> int | None:
        return next((i for ends in self.probation.values() for i, c, _ in ends if c == code), None)


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


def _apply_cohorts(batch: _Batch, plan: _Plan, person: _Person, writes: _Writes) -> bool:
    """Add the flags the record lists and the person lacks; end the flags this agency's sync
    set earlier that the record no longer lists (an absent list lists none, as in the hash).

    Ending is the only way a flag leaves, so the history stays: `end_date` is yesterday, the
    last day it applied. Flags set by other agencies, or not by a sync, are never touched: an
    agency's export speaks only for what that agency said. Returns whether anything changed."""
    subject_id, agency_id = plan.subject_id, batch.agency.id
    listed = set(plan.record.get("cohorts") or ())
    changed = False
    for cohort in sorted(listed - person.cohorts):
        setters = person.cohort_setters.setdefault(cohort, set())
        if writes.cohort_ends.pop((subject_id, cohort), None) is None:
            writes.cohorts.append(
                {
                    "subject_id": subject_id,
                    "cohort": cohort,
                    "area_code": person.area,
                    "start_date": batch.today,
                    "end_date": None,
                    "set_by_agency_id": agency_id,
                }
            )
        # else: an earlier record of this batch ended it; this one keeps it after all
        setters.add(agency_id)
        person.cohorts.add(cohort)
        changed = True
    for cohort in sorted(person.cohorts - listed):
        setters = person.cohort_setters.get(cohort, set())
        if agency_id not in setters:
            continue
        writes.cohort_ends[subject_id, cohort] = agency_id
        setters.discard(agency_id)
        if not setters:
            person.cohorts.discard(cohort)
        changed = True
    return changed


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


def _flush(session: Session, writes: _Writes, people: dict[str, _Person], now: datetime) -> None:
    """One executemany per table (people first: everything else refers to them)."""
    if writes.subjects:
        session.execute(_subjects.insert(), writes.subjects)
    if writes.identifiers:
        session.execute(_identifiers.insert(), writes.identifiers)
    if writes.case_inserts:
        session.execute(_management.insert(), writes.case_inserts)
    if writes.case_updates:
        columns = [name for name in writes.case_updates[0] if name != "id"]
        session.execute(
            _management.update()
            .where(_management.c.id == sa.bindparam("_id"))
            .values({name: sa.bindparam(name) for name in columns}),
            [{**row, "_id": row["id"]} for row in writes.case_updates],
        )
    if writes.risks:
        session.execute(_risks.insert(), writes.risks)
    if writes.cohorts:
        session.execute(_cohorts.insert(), writes.cohorts)
    if writes.cohort_ends:
        # After the inserts: a flag added and ended within one batch ends too.
        session.execute(
            _cohorts.update()
            .where(
                _cohorts.c.subject_id == sa.bindparam("_subject"),
                _cohorts.c.cohort == sa.bindparam("_cohort"),
                _cohorts.c.set_by_agency_id == sa.bindparam("_by"),
                sa.or_(_cohorts.c.end_date.is_(None), _cohorts.c.end_date >= now.date()),
            )
            .values(end_date=now.date() - timedelta(days=1)),
            [
                {"_subject": subject_id, "_cohort": cohort, "_by": by}
                for (subject_id, cohort), by in sorted(writes.cohort_ends.items())
            ],
        )
    need_inserts, need_updates = [], []
    for (subject_id, pathway), level in writes.needs.items():
        row_id = people[subject_id].needs[pathway][0]
        if row_id is None:
            need_inserts.append(
                {"subject_id": subject_id, "pathway": pathway, "level": level, "assessed_at": now}
            )
        else:
            need_updates.append({"_id": row_id, "level": level, "assessed_at": now})
    if need_inserts:
        session.execute(_needs.insert(), need_inserts)
    if need_updates:
        session.execute(
            _needs.update()
            .where(_needs.c.id == sa.bindparam("_id"))
            .values(level=sa.bindparam("level"), assessed_at=sa.bindparam("assessed_at")),
            need_updates,
        )
    if writes.offences:
        session.execute(_offences.insert(), list(writes.offences.values()))
    if writes.refreshed:
        session.execute(
            _subjects.update()
            .where(_subjects.c.id.in_(sorted(writes.refreshed)))
            .values(updated_at=now)
        )


def _end_cases(
    session: Session,
    batch: _Batch,
    ending: list[tuple[int, str, str]],
    managers: dict[str, set[int]],
    report: SyncReport,
) -> None:
    """A snapshot's missing cases: terminated today, and the other managers told."""
    for chunk in _chunks([case_id for case_id, _, _ in ending]):
        session.execute(
            _management.update()
            .where(_management.c.id.in_(chunk))
            .values(
                status="terminated", end_date=batch.today, record_hash=None, updated_at=batch.now
            )
        )
    report.ended = [local_id for _, local_id, _ in ending]
    report.ended_subjects = {subject_id for _, _, subject_id in ending}
    closed = [
        NewChange(
            SUBJECT_UPDATED,
            frozenset(managers[subject_id]),
            subject_id,
            by_agency_id=batch.agency.id,
            detail={"by": batch.agency.code, "changed": ["case_closed"]},
        )
        for subject_id in sorted(report.ended_subjects)
        if managers.get(subject_id)
    ]
    record_changes(session, closed)
    report.changes += len(closed)


def _chunks(values: list[Any], size: int = MAX_PARAMETERS) -> Iterator[list[Any]]:
    """A snapshot may end many thousands of cases: more values than one statement may bind."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- the feed's view of a caseload change -------------------------------------------------


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
        context = record_context(subject, today, policy)
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
