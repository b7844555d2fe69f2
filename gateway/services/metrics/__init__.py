"""Performance figures the ID-IOM way, from partnership data, released only as protected aggregates.

Partners under the performance-reporting agreement get figures, never the rows behind them.
Every figure is labelled "MoJ-style, local data": it is derived from what partners share
through the gateway, not the Ministry of Justice's proven reoffending statistics.

The figures (figures.py)
------------------------
* Cohort. A person enters a calendar year's cohort on the first day in that year they either
  started being managed (a case's `Management.start_date`) or were accepted on a referral (the
  referral's transition to "accepted"). They count once per year, in the quarter of that first
  start, so a year's figures are exactly the sum of its four quarters'. Each entry sits in one
  cell: the person's local authority area and policing unit (as recorded on the subject; a unit
  outside the area counts as "unknown"), one cohort (the highest-priority membership active on
  the start day, PPO first, "none" if there is none) and the managing agency (the agency whose
  case or acceptance was the first start; a case before a referral on the same day).
* Follow-up. Offences in (start, start + 12 months] are further offences; offences in
  (start - 12 months, start] are the year before. A period's figures are final once every
  follow-up has ended and a waiting period (GATEWAY_METRICS_WAITING_MONTHS, 6) has passed for
  offences to be recorded; before that they are labelled provisional.
* Binary rate = people with at least one further offence / cohort size (as a percentage).
  Frequency = further offences per person in the cohort, and per reoffender.
* Offences come from the `offences` table (outcome "further offence reported" and caseload
  updates). A person's offence of one type on one day reported by both feeds is counted once.
* Cost. Each offence is costed from the versioned unit-cost table (gateway/data/unit_costs.yaml,
  or GATEWAY_METRICS_UNIT_COSTS): cost of offending in the 12 months before and after the start,
  the difference (before - after: positive is a saving) and the difference per day (/365).

Disclosure control (disclosure.py)
----------------------------------
1. Counts of 1 to 7 (GATEWAY_METRICS_MIN_COUNT = 8) are suppressed. A cell about 1-7 people is
   withheld whole: no figure of any kind about so few people. Reoffenders are also withheld
   when 1-7 people in the cell did not reoffend (the complement says as much).
2. Released counts are rounded to the nearest 5 (GATEWAY_METRICS_ROUND_TO) and costs to the
   nearest 100 pounds below force-wide level; force-wide cells are released unrounded (but
   rules 1, 3 and 4 apply to them as to every cell, so that no caller under an aggregate-only
   grant ever gets a figure about fewer than 8 people).
3. Rates and averages are computed from unrounded counts and withheld when their denominator
   is under 30 (GATEWAY_METRICS_MIN_RATE_BASE), or when their numerator or denominator is
   itself withheld (a rate beside a released count would give the withheld one back).
4. Secondary suppression: no suppressed cell can be recovered from a total and its siblings,
   nor from any combination of released figures, nor from those together with what anyone
   knows of a withheld value: a listed cell has at least one person (empty cells are not
   listed) and no count is negative. See "Why filters cannot difference" below.

Why filters cannot difference (the design)
------------------------------------------
Queries cannot choose arbitrary populations. The only dimensions are a fixed hierarchy -
time (year > quarter), geography (force > area > policing unit), cohort, managing agency -
and the gateway publishes a fixed set of tables of it: force, area, policing unit, cohort,
agency, area by cohort, area by agency, cohort by agency, each by year and by quarter. A
query picks one of those tables (`group_by`; anything else is refused) and at most an area
and a cohort (which select cells, they never change them). For each calendar year the
gateway tabulates every published table once, applies primary suppression, then secondary
suppression over every sum relation among them (each total = the sum of its children along
each dimension), and checks by exact elimination that no suppressed value is a linear
combination of released values; only then does it pick the requested cells. So two
overlapping queries (area vs area by cohort, year vs quarters, force vs areas) read cells of
one protected set of tables with one suppression pattern, and every total they could subtract
is one of the relations already protected.
The agreement's conditions are applied the same way: LA-BIR sees the Birmingham cells of the
same table (it is always given the area dimension), never a figure that also covers other
areas. Ranges of periods (from/to) return each period's cells, never a sum over the range.

Limits, stated: protection is against exact recovery; a determined attacker can still narrow
a suppressed value to an interval (rounding widens it), which can be narrow (1 or 2 people).
The check knows the sum relations and those lower bounds; it does not model constraints
between measures (reoffenders <= people, offences >= reoffenders) or the non-negativity of
the unpublished cross-classifications (area by cohort by agency), which can narrow ranges.
Figures of provisional periods change as offences are recorded, and comparing releases over
time can reveal a change in a cell.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from audit.events import AuditEvent, EventKind
from gateway.services.metrics.disclosure import DisclosureRules, Protected, protect, tabulate
from gateway.services.metrics.figures import (
    BASIS,
    NOTICE,
    Period,
    UnitCostError,
    UnitCosts,
    cohort_entries,
    entry_figures,
    load_unit_costs,
    period_range,
)
from gateway.services.metrics.load import YearRows, load_year
from gateway.services.metrics.report import (
    Access,
    MetricsQuery,
    Report,
    Scope,
    UnpublishedBreakdown,
    build_report,
    effective_group_by,
)

__all__ = [
    "BASIS",
    "NOTICE",
    "Access",
    "DisclosureRules",
    "MetricsQuery",
    "Period",
    "Report",
    "Scope",
    "Settings",
    "UnitCostError",
    "UnpublishedBreakdown",
    "administrator_release_event",
    "period_range",
    "protected_year",
    "query_from",
    "reoffending_report",
    "settings_from",
]


@dataclass(frozen=True)
class Settings:
    rules: DisclosureRules
    waiting_months: int
    unit_costs: Path


def settings_from(config: Any) -> Settings:
    """The metrics settings of a `gateway.config.Config`."""
    return Settings(
        rules=DisclosureRules(
            min_count=config.metrics_min_count,
            round_to=config.metrics_round_to,
            min_rate_base=config.metrics_min_rate_base,
        ),
        waiting_months=config.metrics_waiting_months,
        unit_costs=Path(config.metrics_unit_costs),
    )


def protected_year(
    rows: YearRows, costs: UnitCosts, rules: DisclosureRules, as_of: date
) -> Protected:
    """A year's full table, computed and protected; pure given the rows."""
    entries = cohort_entries(
        rows.year, rows.starts, rows.people, rows.memberships, rows.unit_areas, as_of
    )
    return protect(rows.year, tabulate(entry_figures(entries, rows.offences, costs, as_of)), rules)


def reoffending_report(
    session: Session, query: MetricsQuery, access: Access, settings: Settings, as_of: date
) -> Report:
    """Load, compute and protect each year the query touches, then select the caller's cells.

    Raises UnpublishedBreakdown for a level that is not published and UnitCostError when the
    unit-cost table cannot be used; either way nothing is released."""
    effective_group_by(query, access)  # refuse before any work
    costs = load_unit_costs(settings.unit_costs)
    tables = {
        year: protected_year(load_year(session, year), costs, settings.rules, as_of)
        for year in sorted({p.year for p in query.periods})
    }
    return build_report(
        query, access, tables, settings.rules, settings.waiting_months, costs, as_of
    )


def query_from(validated: dict[str, Any]) -> MetricsQuery:
    """A MetricsQuery from the output of schemas.metrics.MetricsQuerySchema."""
    if "period" in validated:
        periods = [Period.parse(validated["period"])]
    else:
        periods = period_range(Period.parse(validated["from_"]), Period.parse(validated["to"]))
    return MetricsQuery(
        periods=tuple(periods),
        group_by=tuple(validated.get("group_by", ())),
        area=validated.get("area"),
        cohort=validated.get("cohort"),
    )


def administrator_release_event(report: Report, media: str) -> AuditEvent:
    """The audit event of a board-pack release from the command line.

    Administrators see every area, but what they take away is audited like an API release
    (same details: the query and the cells, never people), so the log answers "what figures
    left the gateway" completely."""
    return AuditEvent(
        event_id=uuid.uuid4().hex,
        kind=EventKind.API_ACCESS,
        time=datetime.now(UTC),
        method="CLI",
        route="iom-gateway metrics report",
        purpose="performance-reporting",
        action="read",
        resource_type="metrics",
        disclosure_level="aggregate",
        fields=tuple(report.fields),
        decision="permit",
        reason="admin",
        details=report.audit_details(media),
    )
