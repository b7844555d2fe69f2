"""Statistical disclosure control for the performance figures: one protected table per year.

The rules are in the package docstring (`gateway.services.metrics`); this module carries them
out. In short: a year's figures are tabulated once over a fixed lattice of cells, every
suppression decision is taken on that whole table, and a query only ever selects cells from
it. So any number of queries, with any filters, see one suppression pattern, and every total
any query can show is the sum of cells of the same table.

The cells. A key is (time, area, policing unit, cohort, agency); each coordinate is a value
or ALL. time is "Y" (the year) or "Q1".."Q4"; policing units nest in areas (a unit cell
always names its area). Only the tables in LEVELS are published; they are closed under
coarsening, so for every dimension a published cell is exactly the sum of its published
children: Y = Q1+Q2+Q3+Q4, force = sum of areas, area = sum of its units, all cohorts = sum
of cohorts, all agencies = sum of agencies. Those equations ("relations") are everything an
attacker can combine released figures with (the tests check this against an attacker who
works from the people-level cells instead).

Suppression, per additive measure (people, reoffenders, offences after, offences before):
primary suppression marks small values; secondary suppression then makes sure that no
relation contains exactly one suppressed cell (else total minus siblings gives it back), and
an exact check over all relations at once (Gaussian elimination over the suppressed cells)
confirms that no suppressed value is a linear combination of released ones; if one is, a
further cell is suppressed and the check repeats. The check assumes released values are
exact, so it does not rely on rounding. Costs follow the pattern of their offence counts
(same relations, same suppressed cells, so the same guarantee).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from gateway.services.metrics.figures import DAYS_PER_YEAR, EntryFigures

ALL = "*"
Key = tuple[str, str, str, str, str]  # (time, area, policing unit, cohort, agency)
TIME, AREA, UNIT, COHORT, AGENCY = range(5)
MEASURES = ("people", "reoffenders", "offences", "offences_before")
# A cost is released exactly where the count of the offences it costs is.
COST_OF = {"cost_after": "offences", "cost_before": "offences_before"}
_PRIME = (1 << 61) - 1  # arithmetic for the exact check is modulo this (Mersenne) prime


@dataclass(frozen=True)
class DisclosureRules:
    """The thresholds; from configuration (GATEWAY_METRICS_*), defaults as agreed."""

    min_count: int = 8  # counts 1 .. min_count - 1 are suppressed
    round_to: int = 5  # released counts below force-wide level are rounded to this
    min_rate_base: int = 30  # a rate or average over fewer people is withheld
    cost_round_to: int = 100  # costs below force-wide level, in pounds

    def __post_init__(self) -> None:
        for name in ("min_count", "round_to", "min_rate_base", "cost_round_to"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"disclosure rule {name} must be a whole number from 1")

    def small(self, count: int) -> bool:
        return 0 < count < self.min_count


@dataclass
class Totals:
    """The additive measures of one cell, unrounded."""

    people: int = 0
    reoffenders: int = 0
    offences: int = 0
    offences_before: int = 0
    cost_before: int = 0
    cost_after: int = 0

    def add(self, figures: EntryFigures) -> None:
        self.people += 1
        self.reoffenders += int(figures.reoffended)
        self.offences += figures.offences_after
        self.offences_before += figures.offences_before
        self.cost_before += figures.cost_before
        self.cost_after += figures.cost_after


@dataclass(frozen=True)
class Relation:
    """total = sum(children): one equation anyone holding the released cells can use."""

    total: Key
    children: tuple[Key, ...]

    @property
    def members(self) -> tuple[Key, ...]:
        return (self.total, *self.children)


# The published tables: (geography, by cohort, by agency), each by year and by quarter.
# Geography is "force", "area" or "unit". Units are published on their own; otherwise at most
# two of area, cohort and agency are crossed. The finer cross-classifications (unit by cohort,
# area by cohort by agency, ...) would be almost entirely suppressed at any realistic volume,
# and every extra table is one more way to combine figures, so they are not published at all.
LEVELS: tuple[tuple[str, bool, bool], ...] = (
    ("force", False, False),
    ("area", False, False),
    ("unit", False, False),
    ("force", True, False),
    ("force", False, True),
    ("force", True, True),
    ("area", True, False),
    ("area", False, True),
)


def tabulate(figures: Iterable[EntryFigures]) -> dict[Key, Totals]:
    """Every non-empty cell of a year's published tables (empty cells are zero and omitted).

    Each person counts in one cell of each table (their quarter's and the year's), so within
    a table the cells partition the cohort and every total is the sum of its children."""
    table: dict[Key, Totals] = defaultdict(Totals)
    for item in figures:
        e = item.entry
        places = {
            "force": (ALL, ALL),
            "area": (e.area, ALL),
            "unit": (e.area, e.policing_unit),
        }
        for time in ("Y", f"Q{e.quarter}"):
            for geography, by_cohort, by_agency in LEVELS:
                area, unit = places[geography]
                cohort = e.cohort if by_cohort else ALL
                agency = e.agency if by_agency else ALL
                table[time, area, unit, cohort, agency].add(item)
    return dict(table)


def _parents(key: Key) -> Iterable[tuple[int, Key]]:
    """(dimension, the total this cell is a child of) for each dimension it is broken down by."""
    time, area, unit, cohort, agency = key
    if time != "Y":
        yield TIME, ("Y", area, unit, cohort, agency)
    if unit != ALL:
        yield AREA, (time, area, ALL, cohort, agency)
    elif area != ALL:
        yield AREA, (time, ALL, ALL, cohort, agency)
    if cohort != ALL:
        yield COHORT, (time, area, unit, ALL, agency)
    if agency != ALL:
        yield AGENCY, (time, area, unit, cohort, ALL)


def relations(keys: Iterable[Key]) -> list[Relation]:
    """All the sum relations among the given (non-empty) cells."""
    children: dict[tuple[Key, int], list[Key]] = defaultdict(list)
    for key in keys:
        for dimension, parent in _parents(key):
            children[parent, dimension].append(key)
    return [Relation(parent, tuple(sorted(kids))) for (parent, _), kids in sorted(children.items())]


# --- suppression --------------------------------------------------------------------------


def primary_suppression(table: Mapping[Key, Totals], rules: DisclosureRules) -> dict[str, set[Key]]:
    """Cells withheld for what they are, before any thought of what else could reveal them.

    A cell about 1..7 people is withheld in every measure (no figure about so few people).
    Reoffenders are also withheld when 1..7 people did not reoffend: "all but two of them
    reoffended" is as telling as "two of them did". Offence counts of 1..7 are withheld.
    """
    people = {k for k, v in table.items() if rules.small(v.people)}
    return {
        "people": people,
        "reoffenders": people
        | {
            k
            for k, v in table.items()
            if rules.small(v.reoffenders) or rules.small(v.people - v.reoffenders)
        },
        "offences": people | {k for k, v in table.items() if rules.small(v.offences)},
        "offences_before": people | {k for k, v in table.items() if rules.small(v.offences_before)},
    }


def _complement(
    relation: Relation, values: Mapping[Key, int], suppressed: set[Key], prefer: frozenset[Key]
) -> Key:
    """The cell to suppress beside a lone suppressed one: a child before the total, one already
    withheld in another measure first (fewer cells with gaps), then the smallest non-zero."""
    candidates = [k for k in relation.members if k not in suppressed]
    return min(
        candidates,
        key=lambda k: (
            values.get(k, 0) == 0,
            k == relation.total,
            k not in prefer,
            values.get(k, 0),
            k,
        ),
    )


def _pair_up(
    rels: list[Relation],
    values: Mapping[Key, int],
    suppressed: set[Key],
    prefer: frozenset[Key],
) -> None:
    """Until no relation holds exactly one suppressed cell, suppress a complement in it."""
    where: dict[Key, list[int]] = defaultdict(list)
    for index, relation in enumerate(rels):
        for key in relation.members:
            where[key].append(index)
    pending = list(range(len(rels)))
    while pending:
        relation = rels[pending.pop()]
        hidden = sum(1 for k in relation.members if k in suppressed)
        if hidden != 1:
            continue
        added = _complement(relation, values, suppressed, prefer)
        suppressed.add(added)
        pending.extend(where[added])


def exposed_cells(rels: Iterable[Relation], suppressed: set[Key]) -> set[Key]:
    """The suppressed cells whose value follows exactly from the released ones.

    Every relation is an equation in the suppressed cells it contains (the released ones are
    known constants). A suppressed cell is recoverable exactly when its unit vector lies in
    the row space of those equations, i.e. when the reduced row echelon form has a row with
    that cell alone. Elimination runs over integers modulo a 61-bit prime (exact, no floats,
    no growing fractions): that can report a cell recoverable that is not (the safe side);
    the other way round would need the prime to divide a minor of this 0/1/-1 matrix, which is
    vanishingly unlikely. The tests cross-check it against an independent attacker.
    """
    index: dict[Key, int] = {}
    pivots: dict[int, dict[int, int]] = {}
    holders: dict[int, set[int]] = defaultdict(set)  # column -> pivots whose row holds it
    for relation in rels:
        row: dict[int, int] = {}
        if relation.total in suppressed:
            row[index.setdefault(relation.total, len(index))] = 1
        for child in relation.children:
            if child in suppressed:
                row[index.setdefault(child, len(index))] = _PRIME - 1
        if row:
            _insert(row, pivots, holders)
    keys = {i: k for k, i in index.items()}
    return {keys[col] for col, row in pivots.items() if len(row) == 1}


def _axpy(target: dict[int, int], factor: int, row: Mapping[int, int]) -> None:
    """target -= factor * row (mod p), dropping zeros."""
    for col, value in row.items():
        updated = (target.get(col, 0) - factor * value) % _PRIME
        if updated:
            target[col] = updated
        else:
            target.pop(col, None)


def _insert(
    row: dict[int, int], pivots: dict[int, dict[int, int]], holders: dict[int, set[int]]
) -> None:
    """Add one equation, keeping the pivot rows in reduced row echelon form."""
    for col in [c for c in row if c in pivots]:  # pivot rows hold no other pivot column
        _axpy(row, row[col], pivots[col])
    if not row:
        return
    pivot = min(row)
    inverse = pow(row[pivot], -1, _PRIME)
    row = {c: v * inverse % _PRIME for c, v in row.items()}
    for other in list(holders.get(pivot, ())):
        before = set(pivots[other])
        _axpy(pivots[other], pivots[other][pivot], row)
        for col in before - set(pivots[other]):
            holders[col].discard(other)
        for col in set(pivots[other]) - before:
            holders[col].add(other)
    pivots[pivot] = row
    for col in row:
        holders[col].add(pivot)


def secondary_suppression(
    rels: list[Relation],
    values: Mapping[Key, int],
    primary: set[Key],
    prefer: frozenset[Key] = frozenset(),
) -> frozenset[Key]:
    """Extend `primary` until no suppressed cell can be recovered from the released cells."""
    suppressed = set(primary)
    where: dict[Key, list[Relation]] = defaultdict(list)
    for relation in rels:
        for key in relation.members:
            where[key].append(relation)
    while True:
        _pair_up(rels, values, suppressed, prefer)
        exposed = exposed_cells(rels, suppressed)
        if not exposed:
            return frozenset(suppressed)
        for key in sorted(exposed):
            options = [r for r in where[key] if any(k not in suppressed for k in r.members)]
            if options:
                relation = min(options, key=lambda r: r.total)
                suppressed.add(_complement(relation, values, suppressed, prefer))
            else:  # every neighbour already hidden: hide everything left (never reached in tests)
                suppressed.update(values)


@dataclass(frozen=True)
class Protected:
    """A year's table with the cells withheld in each measure: the only thing queries read."""

    year: int
    table: Mapping[Key, Totals]
    suppressed: Mapping[str, frozenset[Key]] = field(repr=False)

    def withheld(self, key: Key, measure: str) -> bool:
        return key in self.suppressed[COST_OF.get(measure, measure)]


def protect(year: int, table: Mapping[Key, Totals], rules: DisclosureRules) -> Protected:
    """Primary then secondary suppression of every measure of a year's table."""
    rels = relations(table)
    primary = primary_suppression(table, rules)
    suppressed: dict[str, frozenset[Key]] = {}
    for measure in MEASURES:
        values = {k: getattr(v, measure) for k, v in table.items()}
        suppressed[measure] = secondary_suppression(
            rels, values, primary[measure], prefer=suppressed.get("people", frozenset())
        )
    return Protected(year, table, suppressed)


# --- releasing one cell -------------------------------------------------------------------

# Each released figure and the agreement field (policies.vocabulary FIELDS["metrics"]) it is.
FIGURE_FIELDS: Mapping[str, str] = {
    "cohort_size": "cohort_size",
    "reoffenders": "reoffenders",
    "reoffending_rate": "rate",
    "offences": "offences",
    "frequency_per_person": "frequency",
    "frequency_per_reoffender": "frequency",
    "offences_before": "offences",
    "cost_before": "cost",
    "cost_after": "cost",
    "cost_difference": "cost",
    "cost_difference_per_day": "cost",
}
FIGURES = tuple(FIGURE_FIELDS)


def round_to(value: int, base: int) -> int:
    """Nearest multiple of `base`, halves upwards."""
    return base * ((2 * value + base) // (2 * base))


def release(
    protected: Protected, key: Key, rules: DisclosureRules
) -> dict[str, int | float | None]:
    """The figures of one cell as released: None where withheld.

    Counts are rounded to `round_to` and costs to `cost_round_to` below force-wide level
    (force-wide cells are released unrounded; they are still suppressed like any other).
    Rates and averages are computed from unrounded counts, and released only when both their
    numerator and denominator are released and the denominator is at least `min_rate_base`:
    a rate beside a withheld count would give the count back.
    """
    cell = protected.table.get(key, Totals())
    exact = key[AREA] == ALL

    def count(measure: str) -> int | None:
        if protected.withheld(key, measure):
            return None
        value = getattr(cell, measure)
        return value if exact else round_to(value, rules.round_to)

    def cost(value: int) -> int:
        return value if exact else round_to(value, rules.cost_round_to)

    def ratio(top: str, bottom: str, places: int, scale: int = 1) -> float | None:
        denominator = getattr(cell, bottom)
        if denominator < rules.min_rate_base or any(
            protected.withheld(key, m) for m in (top, bottom)
        ):
            return None
        return round(scale * getattr(cell, top) / denominator, places)

    before_known = not protected.withheld(key, "cost_before")
    after_known = not protected.withheld(key, "cost_after")
    difference = cell.cost_before - cell.cost_after
    return {
        "cohort_size": count("people"),
        "reoffenders": count("reoffenders"),
        "reoffending_rate": ratio("reoffenders", "people", 1, scale=100),
        "offences": count("offences"),
        "frequency_per_person": ratio("offences", "people", 2),
        "frequency_per_reoffender": ratio("offences", "reoffenders", 2),
        "offences_before": count("offences_before"),
        "cost_before": cost(cell.cost_before) if before_known else None,
        "cost_after": cost(cell.cost_after) if after_known else None,
        "cost_difference": cost(difference) if before_known and after_known else None,
        "cost_difference_per_day": (
            math.floor(Fraction(difference, DAYS_PER_YEAR) + Fraction(1, 2))
            if before_known and after_known
            else None
        ),
    }
