"""Performance figures: reoffending, frequency and cost, as protected aggregates only.

The request path as everywhere: caller -> decide (the performance-reporting agreement) ->
compute and protect (gateway.services.metrics) -> select the caller's cells -> note -> respond.
The audit event records the query and the cells released, never the people behind them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response, g, request

from gateway import extensions
from gateway.access import current_caller, note_access, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.oauth import Caller
from gateway.problems import Problem
from gateway.services import metrics
from policies.engine import GrantScope, decide, list_scope
from schemas.metrics import MetricsQuerySchema, MetricsReportSchema

blp = ApiBlueprint(
    "metrics",
    __name__,
    url_prefix="/api/v1/metrics",
    description="Performance figures (aggregates only, small numbers suppressed)",
)

CSV = "text/csv"
JSON = "application/json"
# Keyed 200 (int) as flask-smorest keys its own response, so the two media types merge.
CSV_RESPONSE = {
    200: {"content": {CSV: {"schema": {"type": "string", "description": "One row per cell"}}}}
}


def _usable(scopes: list[GrantScope]) -> list[GrantScope]:
    """The grants that can apply to aggregates: one conditioned on age or a relationship
    cannot be evaluated on a figure about many people, so it permits nothing here."""
    return [s for s in scopes if s.min_age is None and s.max_age is None and not s.relationships]


def _wants_csv() -> bool:
    # Anything else (or nothing) gets JSON: the default representation, never a 406.
    return request.accept_mimetypes.best_match([JSON, CSV], default=JSON) == CSV


@blp.route("/reoffending", methods=["GET"])
@blp.arguments(MetricsQuerySchema, location="query")
@blp.response(200, MetricsReportSchema)
@blp.doc(responses=CSV_RESPONSE)
@requires_scope("metrics:read")
def reoffending(query: dict) -> Any:
    """Binary reoffending rate, frequency and cost of offending, 12 months before and after.

    Cohorts start in the period (a case starting, or a referral accepted). Figures are
    "MoJ-style, local data", not official proven reoffending. Counts of 1-7 are suppressed,
    others rounded to 5 below force-wide level, rates withheld under 30 people, with secondary
    suppression. `Accept: text/csv` for CSV."""
    caller = current_caller()
    media = CSV if _wants_csv() else JSON
    wanted = metrics.query_from(query)
    note_access(
        action="read",
        resource_type="metrics",
        level="aggregate",
        details={"query": wanted.describe(), "format": media},
    )
    now = datetime.now(UTC)
    scopes = _decide(caller, now)
    access = metrics.Access(
        tuple(metrics.Scope(s.areas, s.cohorts, frozenset(s.fields)) for s in scopes)
    )
    settings = metrics.settings_from(extensions.config())
    try:
        report = metrics.reoffending_report(
            extensions.database().session, wanted, access, settings, now.date()
        )
    except metrics.UnpublishedBreakdown as error:
        note_access(decision="deny", reason="unpublished_breakdown")
        raise Problem(
            422,
            "unpublished-breakdown",
            detail=f"No such table: {error}.",
            errors={"query": {"group_by": [str(error)]}},
        ) from None
    except metrics.UnitCostError:
        note_access(decision="deny", reason="unit_costs_unusable")
        raise Problem(
            503,
            "metrics-unavailable",
            detail="The unit-cost table cannot be read; no figures were released.",
        ) from None
    note_access(
        decision="permit",
        reason="ok",
        agreement=",".join(sorted({s.agreement for s in scopes})),
        grant=",".join(sorted(s.grant for s in scopes)),
        fields=report.fields,
        details=report.audit_details(media),
    )
    if media == CSV:
        return Response(
            report.as_csv(),
            mimetype=CSV,
            headers={"Content-Disposition": 'attachment; filename="reoffending.csv"'},
        )
    return report.as_dict()


def _decide(caller: Caller, now: datetime) -> list[GrantScope]:
    """The permitting grants under the performance-reporting agreements, or a 403 problem.

    `decide` (no record: the conditions become cell filters) says whether any grant applies
    and why not; `list_scope` gives the applicable grants' areas, cohorts and fields."""
    policy = extensions.agreements().current()
    common = {
        "agency": caller.agency_code,
        "agency_kind": caller.agency_kind,
        "action": "read",
        "resource": "metrics",
        "purpose": g.purpose,
        "now": now,
    }
    decision = decide(policy, record=None, **common)
    scopes = _usable(list_scope(policy, **common)) if decision.permitted else []
    if not scopes:
        reason = decision.reasons[0].code if decision.reasons else "no_usable_grant"
        note_access(decision="deny", reason=reason)
        raise Problem(
            403,
            "no-metrics-agreement",
            detail="No agreement in force gives you performance figures for this purpose.",
        )
    return scopes
