"""The reoffending figures themselves, over plain rows: who is in a period's cohort, what they
did in the 12 months before and after their start, and what that offending cost.

Nothing here touches Flask or the database, so every rule can be checked by hand on a handful
of dataclasses (see tests/gateway/test_metrics.py). `load.py` turns database rows into these
dataclasses; `disclosure.py` decides what of the result may be released.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import yaml

from policies.vocabulary import COHORTS
from schemas.referrals import OFFENCE_TYPES

BASIS = "MoJ-style, local data"
NOTICE = (
    "Derived from IOM partnership data shared through the gateway (MoJ-style, local data). "
    "These are not official proven reoffending statistics, which the Ministry of Justice "
    "derives from the Police National Computer."
)
FOLLOW_UP_MONTHS = 12
DAYS_PER_YEAR = 365  # the divisor of the per-day cost, whatever the year's length
NO_COHORT = "none"  # a start with no cohort membership active on the day
UNKNOWN_UNIT = "unknown"  # no policing unit recorded, or one outside the person's area
FALLBACK_OFFENCE_TYPE = "other"
# A person in several cohorts counts once, in the first of these that applies (the order
# of the agreements' vocabulary: PPO first); codes outside it come after, alphabetically.
COHORT_PRIORITY: tuple[str, ...] = tuple(COHORTS)

_PERIOD = re.compile(r"(?P<year>20[0-9]{2})(?:Q(?P<quarter>[1-4]))?")


# --- periods ------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` later (or earlier), clamped to the end of a shorter month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


@dataclass(frozen=True)
class Period:
    """A calendar quarter (2015Q1) or year (2015): the unit a cohort is reported by."""

    year: int
    quarter: int | None = None

    @classmethod
    def parse(cls, text: str) -> Period:
        match = _PERIOD.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text[:20]!r} is not a period: write a year (2015) or a quarter (2015Q1)"
            )
        quarter = match["quarter"]
        return cls(int(match["year"]), int(quarter) if quarter else None)

    def __str__(self) -> str:
        return f"{self.year}Q{self.quarter}" if self.quarter else str(self.year)

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.year, self.quarter or 0)

    @property
    def time_key(self) -> str:
        """This period's place in its year's table: "Y" for the year, "Q1".."Q4"."""
        return f"Q{self.quarter}" if self.quarter else "Y"

    @property
    def first_day(self) -> date:
        return date(self.year, 3 * (self.quarter - 1) + 1 if self.quarter else 1, 1)

    @property
    def last_day(self) -> date:
        return add_months(self.first_day, 3 if self.quarter else 12) - timedelta(days=1)

    def follow_up_ends(self) -> date:
        """The last day of the follow-up of the last person to start in the period."""
        return add_months(self.last_day, FOLLOW_UP_MONTHS)

    def final_from(self, waiting_months: int) -> date:
        """The first day the figures are final: every follow-up over, plus the waiting period
        for offences to be reported (an offence is often recorded months after the event)."""
        return add_months(self.last_day + timedelta(days=1), FOLLOW_UP_MONTHS + waiting_months)

    def status(self, as_of: date, waiting_months: int) -> str:
        return "final" if as_of >= self.final_from(waiting_months) else "provisional"

    def next(self) -> Period:
        if self.quarter is None:
            return Period(self.year + 1)
        return (
            Period(self.year + 1, 1) if self.quarter == 4 else Period(self.year, self.quarter + 1)
        )


def period_range(first: Period, last: Period) -> list[Period]:
    """Every period from `first` to `last` inclusive; both quarters or both years."""
    if (first.quarter is None) != (last.quarter is None):
        raise ValueError("from and to must both be years or both be quarters")
    if last.sort_key < first.sort_key:
        raise ValueError("from must not be after to")
    periods = [first]
    while periods[-1] != last:
        periods.append(periods[-1].next())
    return periods


# --- the rows the figures are computed from ----------------------------------------------


@dataclass(frozen=True)
class Start:
    """A day a person started being managed (a case) or was accepted on a referral."""

    subject_id: str
    on: date
    agency: str  # the managing agency, or the agency that accepted the referral
    route: str  # "caseload" or "referral"


@dataclass(frozen=True)
class Person:
    subject_id: str
    area: str
    policing_unit: str | None


@dataclass(frozen=True)
class Membership:
    subject_id: str
    cohort: str
    start: date
    end: date | None


@dataclass(frozen=True)
class OffenceRecord:
    subject_id: str
    offence_type: str
    on: date
    source: str  # "outcome" or "caseload"
    source_ref: str


@dataclass(frozen=True)
class Entry:
    """One person in one year's cohort, with the cell of the table they count in."""

    subject_id: str
    start: date
    area: str
    policing_unit: str
    cohort: str
    agency: str

    @property
    def quarter(self) -> int:
        return (self.start.month - 1) // 3 + 1


@dataclass(frozen=True)
class EntryFigures:
    entry: Entry
    offences_before: int
    offences_after: int
    cost_before: int
    cost_after: int

    @property
    def reoffended(self) -> bool:
        return self.offences_after > 0


def _start_order(start: Start) -> tuple[date, int, str]:
    # The earliest start wins; on the same day a case before a referral, then by agency code,
    # so the same rows always give the same cell.
    return (start.on, 0 if start.route == "caseload" else 1, start.agency)


def _cohort_rank(cohort: str) -> tuple[int, str]:
    try:
        return (COHORT_PRIORITY.index(cohort), cohort)
    except ValueError:
        return (len(COHORT_PRIORITY), cohort)


def primary_cohort(memberships: Iterable[Membership], on: date) -> str:
    """The cohort a person counts in on `on`: the highest-priority membership active that day."""
    active = [m.cohort for m in memberships if m.start <= on and (m.end is None or m.end >= on)]
    return min(active, key=_cohort_rank) if active else NO_COHORT


def cohort_entries(
    year: int,
    starts: Iterable[Start],
    people: Mapping[str, Person],
    memberships: Iterable[Membership],
    unit_areas: Mapping[str, str],
    as_of: date,
) -> list[Entry]:
    """A year's cohort: each person once, at their first start in the calendar year.

    Once per year (not once per quarter) so that the four quarters partition the year: the
    year's figures are exactly the sum of its quarters', which the disclosure control relies
    on. A person who starts again in a later year is in that year's cohort too. Starts after
    `as_of` (a case synced with a future start date) are not counted yet.
    """
    first: dict[str, Start] = {}
    for start in starts:
        if start.on.year != year or start.on > as_of or start.subject_id not in people:
            continue
        current = first.get(start.subject_id)
        if current is None or _start_order(start) < _start_order(current):
            first[start.subject_id] = start
    held: dict[str, list[Membership]] = defaultdict(list)
    for membership in memberships:
        held[membership.subject_id].append(membership)
    entries = []
    for subject_id, start in sorted(first.items()):
        person = people[subject_id]
        unit = person.policing_unit
        if unit is None or unit_areas.get(unit) != person.area:
            unit = UNKNOWN_UNIT
        entries.append(
            Entry(
                subject_id=subject_id,
                start=start.on,
                area=person.area,
                policing_unit=unit,
                cohort=primary_cohort(held[subject_id], start.on),
                agency=start.agency,
            )
        )
    return entries


def offence_events(offences: Iterable[OffenceRecord]) -> dict[str, list[tuple[date, str, int]]]:
    """Each person's offences as (date, type, how many), counted once across the two feeds.

    The same offence may arrive both as a provider's "further offence reported" outcome and in
    a probation caseload update. Within one source every record is its own offence (the table
    already refuses the same report twice); across sources, the count for a person, type and
    day is the most that any one source reported, so a double report is counted once.
    """
    by_source: dict[tuple[str, date, str], Counter[str]] = defaultdict(Counter)
    for offence in offences:
        by_source[offence.subject_id, offence.on, offence.offence_type][offence.source] += 1
    events: dict[str, list[tuple[date, str, int]]] = defaultdict(list)
    for (subject_id, on, offence_type), sources in sorted(by_source.items()):
        events[subject_id].append((on, offence_type, max(sources.values())))
    return events


def entry_figures(
    entries: Iterable[Entry],
    offences: Iterable[OffenceRecord],
    costs: UnitCosts,
    as_of: date,
) -> list[EntryFigures]:
    """Offences and their cost in the 12 months before and the 12 months after each start.

    Before is (start - 12 months, start], after is (start, start + 12 months]: an offence on
    the start day is the one that brought the person in, not a further offence. Offences
    dated after `as_of` are ignored (a provisional period's follow-up is still running).
    """
    events = offence_events(o for o in offences if o.on <= as_of)
    figures = []
    for entry in entries:
        low, high = (
            add_months(entry.start, -FOLLOW_UP_MONTHS),
            add_months(entry.start, FOLLOW_UP_MONTHS),
        )
        before = after = cost_before = cost_after = 0
        for on, offence_type, count in events.get(entry.subject_id, ()):
            if low < on <= entry.start:
                before += count
                cost_before += count * costs.of(offence_type)
            elif entry.start < on <= high:
                after += count
                cost_after += count * costs.of(offence_type)
        figures.append(EntryFigures(entry, before, after, cost_before, cost_after))
    return figures


# --- unit costs ---------------------------------------------------------------------------

COST_BASES = ("published", "illustrative", "not_costed")


class UnitCostError(ValueError):
    """The unit-cost file is missing, malformed or incomplete; the message says where."""


@dataclass(frozen=True)
class UnitCost:
    cost: int
    basis: str
    note: str = ""


@dataclass(frozen=True)
class UnitCosts:
    """A versioned table of costs per offence; every report names the table it used."""

    version: int
    source: str
    price_year: str
    costs: Mapping[str, UnitCost]
    sha256: str

    def of(self, offence_type: str) -> int:
        """The cost of one offence; a type the table does not list is costed as "other"."""
        known = self.costs.get(offence_type) or self.costs[FALLBACK_OFFENCE_TYPE]
        return known.cost


def parse_unit_costs(text: str) -> UnitCosts:
    """Validate a unit-cost document: every offence code costed, nothing unknown, no typos."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UnitCostError(f"not YAML: {error}") from None
    if not isinstance(document, dict):
        raise UnitCostError("the file must be a mapping with version, source, price_year, costs")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UnitCostError("version must be a whole number from 1")
    for name in ("source", "price_year"):
        if not isinstance(document.get(name), str) or not document[name].strip():
            raise UnitCostError(f"{name} must be given")
    table = document.get("costs")
    if not isinstance(table, dict):
        raise UnitCostError("costs must map offence types to {cost, basis, note}")
    unknown = sorted(set(map(str, table)) - set(OFFENCE_TYPES))
    missing = sorted(set(OFFENCE_TYPES) - set(table))
    if unknown:
        raise UnitCostError(f"unknown offence types: {', '.join(unknown)}")
    if missing:
        raise UnitCostError(f"offence types without a cost: {', '.join(missing)}")
    costs = {}
    for code, entry in table.items():
        if not isinstance(entry, dict):
            raise UnitCostError(f"costs.{code} must be a mapping with cost and basis")
        cost, basis = entry.get("cost"), entry.get("basis")
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise UnitCostError(f"costs.{code}.cost must be whole pounds, 0 or more")
        if basis not in COST_BASES:
            raise UnitCostError(f"costs.{code}.basis must be one of {', '.join(COST_BASES)}")
        costs[code] = UnitCost(cost, basis, str(entry.get("note") or "").strip())
    return UnitCosts(
        version=version,
        source=" ".join(document["source"].split()),
        price_year=str(document["price_year"]),
        costs=costs,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def load_unit_costs(path: Path) -> UnitCosts:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UnitCostError(f"cannot read {path}: {error.strerror}") from None
    return parse_unit_costs(text)
