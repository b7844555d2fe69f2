"""From protected tables to what one caller receives: which cells, labelled how, in JSON or CSV,
and what the audit log says was released.

A query never computes anything: it picks cells out of the protected year tables (see
`disclosure.py`). `group_by` chooses the level (which dimensions are broken down); the area
and cohort filters and the caller's agreement conditions only drop cells at that level. A
caller whose every grant is limited to some areas (LA-BIR: Birmingham) always gets the area
dimension, so it is never shown a figure that covers areas it may not see.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from gateway.services.metrics.disclosure import (
    AGENCY,
    ALL,
    AREA,
    COHORT,
    FIGURE_FIELDS,
    FIGURES,
    LEVELS,
    TIME,
    UNIT,
    DisclosureRules,
    Key,
    Protected,
    release,
)
from gateway.services.metrics.figures import (
    BASIS,
    DAYS_PER_YEAR,
    FOLLOW_UP_MONTHS,
    NOTICE,
    Period,
    UnitCosts,
)

DIMENSIONS = ("area", "policing_unit", "cohort", "agency")  # the order of output columns
_POSITION = {"area": AREA, "policing_unit": UNIT, "cohort": COHORT, "agency": AGENCY}
ALL_LABEL = "all"
WITHHELD_CSV = "[c]"  # the GSS symbol for a figure withheld as confidential
NOT_GRANTED_CSV = "[x]"  # not available to this caller
MAX_AUDITED_CELLS = 300


@dataclass(frozen=True)
class MetricsQuery:
    """What the caller asked for, already validated (schemas/metrics.py)."""

    periods: tuple[Period, ...]
    group_by: tuple[str, ...] = ()
    area: str | None = None
    cohort: str | None = None

    def describe(self) -> str:
        """The query as one canonical line for the audit log."""
        parts = [f"periods={','.join(map(str, self.periods))}"]
        parts.append(f"group_by={','.join(self.group_by)}")
        if self.area:
            parts.append(f"area={self.area}")
        if self.cohort:
            parts.append(f"cohort={self.cohort}")
        return " ".join(parts)


@dataclass(frozen=True)
class Scope:
    """One permitting grant's reach: areas and cohorts (empty: any), and its fields."""

    areas: frozenset[str] = frozenset()
    cohorts: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset(FIGURE_FIELDS.values())

    def sees(self, area: str, cohort: str) -> bool:
        # A cell not broken down by area covers every area: only an unlimited grant sees it.
        return (not self.areas or area in self.areas) and (
            not self.cohorts or cohort in self.cohorts
        )


@dataclass(frozen=True)
class Access:
    """What the caller's permitting grants reach; the union of their scopes."""

    scopes: tuple[Scope, ...]

    @classmethod
    def everything(cls) -> Access:
        return cls((Scope(),))

    def fields_for(self, area: str, cohort: str) -> frozenset[str]:
        found: frozenset[str] = frozenset()
        for scope in self.scopes:
            if scope.sees(area, cohort):
                found |= scope.fields
        return found

    def forced_dimensions(self) -> set[str]:
        """Dimensions every grant limits: always broken down, or nothing would be visible."""
        forced = set()
        if self.scopes and all(s.areas for s in self.scopes):
            forced.add("area")
        if self.scopes and all(s.cohorts for s in self.scopes):
            forced.add("cohort")
        return forced


class UnpublishedBreakdown(ValueError):
    """The query asks for a table the gateway does not publish (see disclosure.LEVELS)."""


PUBLISHED = "policing_unit on its own, or at most two of area, cohort and agency"


def published(group_by: Iterable[str]) -> bool:
    dimensions = set(group_by)
    geography = (
        "unit" if "policing_unit" in dimensions else "area" if "area" in dimensions else "force"
    )
    return (geography, "cohort" in dimensions, "agency" in dimensions) in LEVELS


def effective_group_by(query: MetricsQuery, access: Access) -> tuple[str, ...]:
    """The level the query reads: what it asked for, plus what its filters and grants imply.

    Raises UnpublishedBreakdown when that level is not a published table (for an area-limited
    caller the area dimension counts: LA-BIR may have area by cohort, not cohort by agency)."""
    wanted = set(query.group_by) | access.forced_dimensions()
    if "policing_unit" in wanted or query.area:
        wanted.add("area")  # units nest in areas
    if query.cohort:
        wanted.add("cohort")
    if not published(wanted):
        forced = sorted(access.forced_dimensions() - set(query.group_by))
        because = f" (your agreements add {', '.join(forced)})" if forced else ""
        raise UnpublishedBreakdown(f"published breakdowns are {PUBLISHED}{because}")
    return tuple(d for d in DIMENSIONS if d in wanted)


@dataclass(frozen=True)
class PeriodInfo:
    period: Period
    status: str
    final_from: date
    follow_up_ends: date

    def as_dict(self) -> dict:
        return {
            "period": str(self.period),
            "status": self.status,
            "final_from": self.final_from,
            "follow_up_ends": self.follow_up_ends,
        }


@dataclass(frozen=True)
class Cell:
    period: PeriodInfo
    key: Key
    figures: Mapping[str, int | float | None]  # only the figures the caller's grants name

    def label(self, dimension: str) -> str:
        value = self.key[_POSITION[dimension]]
        return ALL_LABEL if value == ALL else value

    @property
    def withheld(self) -> list[str]:
        return [name for name, value in self.figures.items() if value is None]

    def audit_label(self) -> str:
        return "|".join([str(self.period.period), *(self.label(d) for d in DIMENSIONS)])

    def as_dict(self) -> dict:
        return {
            "period": str(self.period.period),
            "status": self.period.status,
            "basis": BASIS,
            **{d: self.label(d) for d in DIMENSIONS},
            **self.figures,
            "withheld": self.withheld,
        }


@dataclass(frozen=True)
class Report:
    query: MetricsQuery
    group_by: tuple[str, ...]
    periods: tuple[PeriodInfo, ...]
    cells: tuple[Cell, ...]
    rules: DisclosureRules
    waiting_months: int
    costs: UnitCosts
    as_of: date
    fields: frozenset[str] = field(default_factory=frozenset)

    def as_dict(self) -> dict:
        return {
            "measure": "reoffending",
            "basis": BASIS,
            "notice": NOTICE,
            "as_of": self.as_of,
            "query": {
                "periods": [str(p) for p in self.query.periods],
                "group_by": list(self.group_by),
                "requested_group_by": list(self.query.group_by),
                "area": self.query.area,
                "cohort": self.query.cohort,
            },
            "method": {
                "follow_up_months": FOLLOW_UP_MONTHS,
                "waiting_months": self.waiting_months,
                "cost_days_per_year": DAYS_PER_YEAR,
            },
            "disclosure_control": {
                "suppressed_counts_below": self.rules.min_count,
                "counts_rounded_to": self.rules.round_to,
                "costs_rounded_to": self.rules.cost_round_to,
                "rates_need_at_least": self.rules.min_rate_base,
                "secondary_suppression": True,
                "force_wide_rounded": False,
            },
            "unit_costs": {
                "version": self.costs.version,
                "source": self.costs.source,
                "price_year": self.costs.price_year,
                "sha256": self.costs.sha256,
            },
            "periods": [p.as_dict() for p in self.periods],
            "cells": [c.as_dict() for c in self.cells],
        }

    def csv_columns(self) -> list[str]:
        granted = [f for f in FIGURES if any(f in c.figures for c in self.cells)]
        return ["period", "status", "basis", *DIMENSIONS, *granted]

    def as_csv(self) -> str:
        """One row per cell, every row labelled; withheld figures as [c]."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        columns = self.csv_columns()
        writer.writerow(columns)
        for cell in self.cells:
            row = cell.as_dict()
            writer.writerow([_csv_value(row[c]) if c in row else NOT_GRANTED_CSV for c in columns])
        return out.getvalue()

    def audit_details(self, media: str) -> dict[str, str | int | bool | list[str]]:
        """What the audit log keeps: the query and the cells released, never who is in them."""
        labels = [c.audit_label() for c in self.cells]
        released = json.dumps(
            [c.as_dict() for c in self.cells], sort_keys=True, default=str
        ).encode()
        return {
            "query": self.query.describe(),
            "periods": [str(p) for p in self.query.periods],
            "group_by": list(self.group_by),
            "format": media,
            "cells_released": len(labels),
            "cells": labels[:MAX_AUDITED_CELLS],
            "cells_truncated": len(labels) > MAX_AUDITED_CELLS,
            "cells_with_withheld_figures": sum(1 for c in self.cells if c.withheld),
            "unit_costs_version": self.costs.version,
            "unit_costs_sha256": self.costs.sha256,
            "released_sha256": hashlib.sha256(released).hexdigest(),
        }


def _csv_value(value: object) -> str:
    if value is None:
        return WITHHELD_CSV
    return str(value)


def _at_level(key: Key, time_key: str, group_by: Iterable[str]) -> bool:
    if key[TIME] != time_key:
        return False
    wanted = set(group_by)
    return all((key[_POSITION[d]] != ALL) == (d in wanted) for d in DIMENSIONS)


def select_cells(
    protected: Protected,
    period: PeriodInfo,
    query: MetricsQuery,
    group_by: tuple[str, ...],
    access: Access,
    rules: DisclosureRules,
) -> list[Cell]:
    """The cells of one period at the query's level that the filters and grants let through."""
    time_key = period.period.time_key
    keys = [k for k in protected.table if _at_level(k, time_key, group_by)]
    if not group_by and not keys:
        keys = [(time_key, ALL, ALL, ALL, ALL)]  # nobody started: the total is zero
    cells = []
    for key in sorted(keys):
        if query.area and key[AREA] != query.area:
            continue
        if query.cohort and key[COHORT] != query.cohort:
            continue
        fields = access.fields_for(key[AREA], key[COHORT])
        if not fields:
            continue
        released = release(protected, key, rules)
        figures = {name: released[name] for name in FIGURES if FIGURE_FIELDS[name] in fields}
        cells.append(Cell(period, key, figures))
    return cells


def build_report(
    query: MetricsQuery,
    access: Access,
    tables: Mapping[int, Protected],
    rules: DisclosureRules,
    waiting_months: int,
    costs: UnitCosts,
    as_of: date,
) -> Report:
    """Assemble the report for a query from the protected tables of the years it touches."""
    group_by = effective_group_by(query, access)
    periods = tuple(
        PeriodInfo(
            period=p,
            status=p.status(as_of, waiting_months),
            final_from=p.final_from(waiting_months),
            follow_up_ends=p.follow_up_ends(),
        )
        for p in query.periods
    )
    cells: list[Cell] = []
    for info in periods:
        cells.extend(select_cells(tables[info.period.year], info, query, group_by, access, rules))
    fields = frozenset(
        FIGURE_FIELDS[name]
        for cell in cells
        for name, value in cell.figures.items()
        if value is not None
    )
    return Report(
        query, group_by, periods, tuple(cells), rules, waiting_months, costs, as_of, fields
    )
