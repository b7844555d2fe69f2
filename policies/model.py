"""The loaded, immutable form of an information-sharing agreement.

Agreements are frozen so that a compiled PolicySet can never be changed behind the engine's
back: replacing the agreements in force means compiling a new PolicySet and swapping it in.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

_DURATION = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?")


@dataclass(frozen=True)
class Retention:
    """An ISO 8601 date duration: ISAs state retention in whole years, months, weeks or days."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Retention:
        """Parse "P2Y", "P6M", "P1Y6M", "P90D"; ValueError for anything else or a zero length."""
        match = _DURATION.fullmatch(text) if isinstance(text, str) else None
        if match is None or not any(match.groups()):
            raise ValueError(f"{text!r} is not an ISO 8601 date duration such as P2Y, P6M or P90D")
        retention = cls(*(int(part or 0) for part in match.groups()))
        if not any((retention.years, retention.months, retention.weeks, retention.days)):
            raise ValueError(f"{text!r} is a zero retention period")
        return retention

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.weeks, self.days), "YMWD", strict=True)
        return "P" + "".join(f"{n}{unit}" for n, unit in parts if n)

    def after(self, start: date) -> date:
        """The date a record made on `start` falls due for deletion (month ends clamp)."""
        month_index = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + month_index // 12, month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return date(year, month, day) + timedelta(weeks=self.weeks, days=self.days)


@dataclass(frozen=True)
class Party:
    agency: str
    role: str


@dataclass(frozen=True)
class Purpose:
    code: str
    description: str


@dataclass(frozen=True)
class Conditions:
    """Conditions on the record; empty means "no condition of that kind".

    Within one kind the values are alternatives (any cohort listed, any relationship listed);
    across kinds every condition must hold.
    """

    cohorts: frozenset[str] = frozenset()
    areas: frozenset[str] = frozenset()
    min_age: int | None = None
    max_age: int | None = None
    relationships: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Grant:
    """One clause of an agreement; `fields` is already expanded from groups."""

    id: str
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]
    resource: str
    actions: tuple[str, ...]
    conditions: Conditions
    fields: tuple[str, ...]
    level: str
    age_band: bool = False


@dataclass(frozen=True)
class Agreement:
    id: str
    version: int
    title: str
    parties: tuple[Party, ...]
    purposes: tuple[Purpose, ...]
    lawful_basis: tuple[str, ...]
    valid_from: date
    valid_until: date
    review_by: date
    retention: Retention
    grants: tuple[Grant, ...]
    source: str = field(default="", compare=False)
    # The validated document as JSON text, so the gateway can store and rebuild it exactly.
    document_json: str = field(default="{}", compare=False, repr=False)

    @property
    def label(self) -> str:
        """The "id@version" form decisions and the audit log cite."""
        return f"{self.id}@{self.version}"

    @property
    def party_codes(self) -> frozenset[str]:
        return frozenset(party.agency for party in self.parties)

    def in_force(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_until

    def to_document(self) -> dict[str, Any]:
        """A JSON-ready dict that `agreement_from_document` turns back into this agreement."""
        return json.loads(self.document_json)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an agreement, located well enough to fix it without searching."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field or '(document)'}: {self.message}"


class AgreementError(ValueError):
    """An agreement was rejected; `problems` lists every reason, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
