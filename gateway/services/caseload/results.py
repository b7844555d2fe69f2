"""The outcomes, refusals and change kinds of a sync: the vocabulary the API and every other
module of the package share, so it sits at the bottom and imports none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUBJECT_UPDATED = "caseload.subject_updated"
TRANSFER_FLAGGED = "caseload.transfer_flagged"
CASELOAD_KINDS = (SUBJECT_UPDATED, TRANSFER_FLAGGED)
PROBLEM_PREFIX = "urn:iom-gateway:problem:"


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
