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
further cell is suppressed and the check repeats. The check also uses the lower bounds
everyone knows (a listed cell has at least one person, no count is negative): hidden cells
that the relations pin to those bounds (two withheld 1-person cells beside a total that
leaves 2; withheld reoffender cells that must add up to 0) count as recovered, and a
complement with room to move is suppressed beside them. The check assumes released values are
exact, so it does not rely on rounding. Costs follow the pattern of their offence counts
(same relations, same suppressed cells, so the same guarantee).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
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


def lower_bound(measure: str) -> int:
    """What anyone knows a withheld value is at least: every listed cell has somebody in it
    (empty cells are not listed), and no count is negative."""
    return 1 if measure == "people" else 0


def _complement(
    relation: Relation,
    values: Mapping[Key, int],
    suppressed: set[Key],
    prefer: frozenset[Key],
    lower: int = 0,
) -> Key:
    """The cell to suppress beside the suppressed ones: one with room to move (a value above
    the lower bound, so the hidden cells together are not pinned to their bounds), a child
    before the total, one already withheld in another measure first (fewer cells with gaps),
    then the smallest."""
    candidates = [k for k in relation.members if k not in suppressed]
    return min(
        candidates,
        key=lambda k: (
            values.get(k, 0) <= lower,
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
    lower: int = 0,
) -> None:
    """Until no relation gives a suppressed cell away on its own, suppress a complement in it.

    A relation gives cells away when it holds exactly one suppressed cell (total minus
    siblings), or when its total is released and every suppressed child sits at its lower
    bound: their known sum is then the sum of their bounds, so each is at its bound (two
    withheld 1-person cells beside a released total that leaves 2)."""
    where: dict[Key, list[int]] = defaultdict(list)
    for index, relation in enumerate(rels):
        for key in relation.members:
            where[key].append(index)
    pending = list(range(len(rels)))
    while pending:
        relation = rels[pending.pop()]
        hidden = [k for k in relation.members if k in suppressed]
        if not hidden or len(hidden) == len(relation.members):
            continue
        pinned = relation.total not in suppressed and all(values.get(k, 0) <= lower for k in hidden)
        if len(hidden) != 1 and not pinned:
            continue
        added = _complement(relation, values, suppressed, prefer, lower)
        suppressed.add(added)
        pending.extend(where[added])


def exposed_cells(
    rels: Iterable[Relation],
    suppressed: set[Key],
    values: Mapping[Key, int] | None = None,
    lower: int = 0,
) -> set[Key]:
    """The suppressed cells whose value follows exactly from the released ones.

    Every relation is an equation in the suppressed cells it contains (the released ones are
    known constants). A suppressed cell is recoverable exactly when its unit vector lies in
    the row space of those equations, i.e. when the reduced row echelon form has a row with
    that cell alone. Elimination runs over integers modulo a 61-bit prime (exact, no floats,
    no growing fractions): that can report a cell recoverable that is not (the safe side);
    the other way round would need the prime to divide a minor of this 0/1/-1 matrix, which is
    vanishingly unlikely. The tests cross-check it against an independent attacker.

    Given the true `values`, the attacker also knows that every suppressed value is at least
    `lower` (`lower_bound`). Those inequalities can pin cells that the equations alone do not
    (`pinned_at_bounds`); the cells they pin count as known, and so does whatever then
    follows from the equations.
    """
    rels = list(rels)
    pinned = pinned_at_bounds(rels, suppressed, values, lower) if values is not None else set()
    index: dict[Key, int] = {}
    pivots: dict[int, dict[int, int]] = {}
    holders: dict[int, set[int]] = defaultdict(set)  # column -> pivots whose row holds it
    for key in sorted(pinned):
        _insert({index.setdefault(key, len(index)): 1}, pivots, holders)
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


def pinned_at_bounds(
    rels: Iterable[Relation], suppressed: set[Key], values: Mapping[Key, int], lower: int
) -> set[Key]:
    """The suppressed cells that the equations and the lower bounds together pin to the bound.

    The attacker's feasible set is {y : every relation holds, every suppressed y >= lower},
    and the true table is in it. A bound y_c >= lower holds with equality all over that set
    exactly when some combination of the equations reads sum(r_i * y_i) = sum(r_i * lower)
    with every r_i >= 0 and r_c > 0 (Farkas); the true values satisfy it, so such an r only
    involves cells that are at their bound ("tight"). So: eliminate, exactly over the
    rationals, the suppressed cells above their bound first; the rows left hold tight cells
    only and span every such combination; the cells pinned are the largest support of a
    non-negative vector in their span. Every other bound can then be left strictly at once,
    so the feasible set spans the solutions of the equations with the pinned cells fixed,
    and elimination decides the rest (`exposed_cells`).
    """
    tight = {k for k in suppressed if values.get(k, 0) <= lower}
    if not tight:
        return set()
    loose = sorted(suppressed - tight)
    order = loose + sorted(tight)  # loose columns first: they are eliminated first
    index = {k: i for i, k in enumerate(order)}
    pivots: dict[int, dict[int, int]] = {}
    holders: dict[int, set[int]] = defaultdict(set)
    for relation in rels:
        row = {
            index[k]: 1 if k == relation.total else -1 for k in relation.members if k in suppressed
        }
        if row:
            _insert(row, pivots, holders, RATIONAL)
    # A pivot is the smallest column of its row, so a row with a tight pivot holds tight only.
    basis = [row for col, row in pivots.items() if col >= len(loose)]
    pinned: set[int] = set()
    for group in _connected(basis):
        pinned |= _largest_nonnegative_support(group)
    return {order[col] for col in pinned}


def _connected(rows: list[dict[int, int]]) -> list[list[dict[int, int]]]:
    """The rows in groups that share no column (independent parts of the problem)."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for i, row in enumerate(rows):
        for col in row:
            if col in owner:
                parent[find(i)] = find(owner[col])
            else:
                owner[col] = i
    groups: dict[int, list[dict[int, int]]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[find(i)].append(row)
    return list(groups.values())


def _largest_nonnegative_support(rows: list[dict[int, int]]) -> set[int]:
    """The columns where some non-negative combination of `rows` is non-zero.

    The rows are in reduced row echelon form: each row's pivot (its smallest column) is
    positive and in no other row, so a non-negative combination has coefficients >= 0. The
    support S found so far always carries a non-negative vector w that is positive on all of
    S; anything non-negative outside S becomes non-negative everywhere once enough w is added,
    so only columns outside S constrain. Repeat: a row non-negative outside S joins S; a row
    negative in a column outside S where no other row is positive must get 0 and goes; when
    neither applies, a linear programme (maximise the combination's sum outside S, coefficients
    >= 0 summing to at most 1, the combination >= 0 outside S) finds a combination reaching a
    new column, or proves there is none."""
    support: set[int] = set()
    live = list(rows)
    while live:
        joining = [row for row in live if all(v > 0 or c in support for c, v in row.items())]
        if joining:
            for row in joining:
                support.update(row)
            live = [row for row in live if not all(c in support for c in row)]
            continue
        positive = support | {c for row in live for c, v in row.items() if v > 0}
        kept = [row for row in live if all(v > 0 or c in positive for c, v in row.items())]
        if len(kept) < len(live):
            live = kept
            continue
        found = _reaching_combination(live, support)
        if not found:
            break
        support |= found
        live = [row for row in live if not all(c in support for c in row)]
    return support


def _reaching_combination(rows: list[dict[int, int]], support: set[int]) -> set[int]:
    """The columns outside `support` where a best combination of `rows` (coefficients >= 0,
    at most 1 in all, the combination >= 0 outside `support`) is positive; empty if none."""
    columns = sorted({c for row in rows for c in row} - support)
    matrix = [[Fraction(-row.get(c, 0)) for row in rows] for c in columns]  # -combination <= 0
    matrix.append([Fraction(1)] * len(rows))  # sum of the coefficients <= 1
    bounds = [Fraction(0)] * len(columns) + [Fraction(1)]
    objective = [Fraction(sum(v for c, v in row.items() if c not in support)) for row in rows]
    weights = _simplex(objective, matrix, bounds)
    combination = {
        c: sum(w * row.get(c, 0) for w, row in zip(weights, rows, strict=True)) for c in columns
    }
    return {c for c, v in combination.items() if v > 0}


def _simplex(
    objective: list[Fraction], matrix: list[list[Fraction]], bounds: list[Fraction]
) -> list[Fraction]:
    """A maximum of objective.x subject to matrix.x <= bounds and x >= 0, where bounds >= 0
    (x = 0 is feasible: one phase) and the maximum is finite. Exact arithmetic; Bland's rule,
    so degenerate steps cannot cycle."""
    m, n = len(matrix), len(objective)
    tableau = [
        [*row, *(Fraction(int(i == j)) for j in range(m)), bound]
        for i, (row, bound) in enumerate(zip(matrix, bounds, strict=True))
    ]
    cost = [-v for v in objective] + [Fraction(0)] * (m + 1)
    basic = [n + i for i in range(m)]
    while True:
        entering = next((j for j in range(n + m) if cost[j] < 0), None)
        if entering is None:
            break
        candidates = [
            (row[-1] / row[entering], basic[i], i)
            for i, row in enumerate(tableau)
            if row[entering] > 0
        ]
        if not candidates:
            raise ArithmeticError("unbounded linear programme")
        leaving = min(candidates)[2]
        pivot_row = tableau[leaving]
        scale = pivot_row[entering]
        pivot_row[:] = [v / scale for v in pivot_row]
        for i, row in enumerate(tableau):
            if i != leaving and row[entering]:
                factor = row[entering]
                row[:] = [a - factor * b for a, b in zip(row, pivot_row, strict=True)]
        factor = cost[entering]
        cost[:] = [a - factor * b for a, b in zip(cost, pivot_row, strict=True)]
        basic[leaving] = entering
    solution = [Fraction(0)] * (n + m)
    for i, var in enumerate(basic):
        solution[var] = tableau[i][-1]
    return solution[:n]


Row = dict[int, int]
# How rows are combined: eliminate a column from a row by a pivot row, and scale a row to its
# pivot. Modulo the prime for `exposed_cells`; over the rationals for `pinned_at_bounds`.
Arithmetic = tuple[Callable[[Row, Row, int], Row], Callable[[Row, int], Row]]


def _eliminated_mod(target: Row, row: Row, col: int) -> Row:
    """target - target[col] * row (mod p; row[col] is 1), in place, dropping zeros."""
    factor = target[col]
    for c, value in row.items():
        updated = (target.get(c, 0) - factor * value) % _PRIME
        if updated:
            target[c] = updated
        else:
            target.pop(c, None)
    return target


def _normalised_mod(row: Row, pivot: int) -> Row:
    if row[pivot] == 1:
        return row
    inverse = pow(row[pivot], -1, _PRIME)
    return {c: v * inverse % _PRIME for c, v in row.items()}


def _eliminated_rational(target: Row, row: Row, col: int) -> Row:
    """row[col] * target - target[col] * row: col drops out, and row[col] > 0 keeps the signs
    (all that `_largest_nonnegative_support` needs)."""
    scale, factor = row[col], target[col]
    out = {c: scale * v for c, v in target.items()}
    for c, v in row.items():
        updated = out.get(c, 0) - factor * v
        if updated:
            out[c] = updated
        else:
            out.pop(c, None)
    return out


def _normalised_rational(row: Row, pivot: int) -> Row:
    """Coprime integer entries, the pivot positive."""
    divisor = math.gcd(*row.values()) * (1 if row[pivot] > 0 else -1)
    return {c: v // divisor for c, v in row.items()}


MODULAR: Arithmetic = (_eliminated_mod, _normalised_mod)
RATIONAL: Arithmetic = (_eliminated_rational, _normalised_rational)


def _insert(
    row: Row,
    pivots: dict[int, Row],
    holders: dict[int, set[int]],
    arithmetic: Arithmetic = MODULAR,
) -> None:
    """Add one equation, keeping the pivot rows in reduced row echelon form."""
    eliminated, normalised = arithmetic
    for col in [c for c in row if c in pivots]:  # pivot rows hold no other pivot column
        row = eliminated(row, pivots[col], col)
    if not row:
        return
    pivot = min(row)
    row = normalised(row, pivot)
    for other in list(holders.get(pivot, ())):
        before = set(pivots[other])
        pivots[other] = normalised(eliminated(pivots[other], row, pivot), other)
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
    lower: int = 0,
) -> frozenset[Key]:
    """Extend `primary` until no suppressed cell can be recovered from the released cells,
    the relations among them and the lower bound every suppressed value is known to have."""
    suppressed = set(primary)
    where: dict[Key, list[Relation]] = defaultdict(list)
    for relation in rels:
        for key in relation.members:
            where[key].append(relation)

    def stuck(relation: Relation) -> bool:  # nothing left in it with room to move
        return all(values.get(k, 0) <= lower for k in relation.members if k not in suppressed)

    while True:
        _pair_up(rels, values, suppressed, prefer, lower)
        exposed = exposed_cells(rels, suppressed, values, lower)
        if not exposed:
            return frozenset(suppressed)
        for key in sorted(exposed):
            options = [r for r in where[key] if any(k not in suppressed for k in r.members)]
            if options:
                relation = min(options, key=lambda r: (stuck(r), r.total))
                suppressed.add(_complement(relation, values, suppressed, prefer, lower))
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
            rels,
            values,
            primary[measure],
            prefer=suppressed.get("people", frozenset()),
            lower=lower_bound(measure),
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
