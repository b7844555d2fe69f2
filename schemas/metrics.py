"""Performance figures on the wire: the query, and the report (JSON; CSV carries the same cells).

Every figure is nullable: null means withheld by disclosure control (the cell's `withheld`
lists which). A figure the caller's agreement does not name is absent altogether.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from schemas.common import StrictSchema
from schemas.subjects import AREA

# \Z, not $: `$` also matches before a final newline, which passed "2015\n" on to fail later
PERIOD_PATTERN = r"^20[0-9]{2}(Q[1-4])?\Z"
PERIOD = validate.Regexp(PERIOD_PATTERN, error="Write a year (2015) or a quarter (2015Q1).")
GROUPABLE = ("area", "policing_unit", "cohort", "agency")
GROUP_BY_PATTERN = r"^((area|policing_unit|cohort|agency)(,(area|policing_unit|cohort|agency))*)?\Z"
COHORT = validate.OneOf(
    ["PPO", "HCCU", "SAC", "DA", "CSE", "GANG", "FEMALE", "YOUTH", "U12M", "none"]
)
MAX_PERIODS = 40  # ten years of quarters


class MetricsQuerySchema(StrictSchema):
    period = fields.String(
        validate=PERIOD, metadata={"description": "One quarter (2015Q1) or year (2015)"}
    )
    from_ = fields.String(
        data_key="from",
        validate=PERIOD,
        metadata={"description": "First period of a range (with `to`): each period reported"},
    )
    to = fields.String(validate=PERIOD, metadata={"description": "Last period of the range"})
    group_by = fields.String(
        load_default="",
        validate=validate.Regexp(
            GROUP_BY_PATTERN, error=f"Comma-separated, from: {', '.join(GROUPABLE)}."
        ),
        metadata={"description": f"Comma-separated dimensions: {', '.join(GROUPABLE)}"},
    )
    area = fields.String(validate=AREA, metadata={"description": "Only this area's cells"})
    cohort = fields.String(validate=COHORT, metadata={"description": "Only this cohort's cells"})

    @validates_schema
    def _one_way_to_say_when(self, data: dict, **_: Any) -> None:
        ranged = "from_" in data or "to" in data
        if "period" in data and ranged:
            raise ValidationError("give period, or from and to, not both", "period")
        if not ranged and "period" not in data:
            raise ValidationError("give period, or from and to", "period")
        if not ranged:
            return
        if "from_" not in data or "to" not in data:
            raise ValidationError("from and to go together", "to" if "from_" in data else "from")
        first, last = _ordinal(data["from_"]), _ordinal(data["to"])
        if first[0] != last[0]:
            raise ValidationError("from and to must both be years or both quarters", "to")
        if last[1] < first[1]:
            raise ValidationError("from must not be after to", "from")
        if last[1] - first[1] >= MAX_PERIODS:
            raise ValidationError(f"at most {MAX_PERIODS} periods at a time", "to")

    @post_load
    def _group_by_list(self, data: dict, **_: Any) -> dict:
        data["group_by"] = list(dict.fromkeys(d for d in data["group_by"].split(",") if d))
        return data


def _ordinal(period: str) -> tuple[bool, int]:
    """(is a quarter, position in time) of a period already matched by PERIOD_PATTERN."""
    year, _, quarter = period.partition("Q")
    return (True, int(year) * 4 + int(quarter) - 1) if quarter else (False, int(year))


class PeriodSchema(Schema):
    period = fields.String()
    status = fields.String(metadata={"description": "provisional or final"})
    final_from = fields.Date(metadata={"description": "When the figures become final"})
    follow_up_ends = fields.Date()


class MetricsCellSchema(Schema):
    period = fields.String()
    status = fields.String(metadata={"description": "provisional or final"})
    basis = fields.String(metadata={"description": "Always: MoJ-style, local data"})
    area = fields.String(metadata={"description": "Area code, or all"})
    policing_unit = fields.String(metadata={"description": "Unit code, unknown, or all"})
    cohort = fields.String(metadata={"description": "Cohort code, none, or all"})
    agency = fields.String(metadata={"description": "Managing agency code, or all"})
    cohort_size = fields.Integer(allow_none=True)
    reoffenders = fields.Integer(allow_none=True)
    reoffending_rate = fields.Float(
        allow_none=True, metadata={"description": "Percentage with a further offence"}
    )
    offences = fields.Integer(allow_none=True, metadata={"description": "Further offences"})
    frequency_per_person = fields.Float(allow_none=True)
    frequency_per_reoffender = fields.Float(allow_none=True)
    offences_before = fields.Integer(
        allow_none=True, metadata={"description": "Offences in the 12 months before the start"}
    )
    cost_before = fields.Integer(allow_none=True, metadata={"description": "Pounds"})
    cost_after = fields.Integer(allow_none=True, metadata={"description": "Pounds"})
    cost_difference = fields.Integer(
        allow_none=True, metadata={"description": "cost_before - cost_after (a saving if > 0)"}
    )
    cost_difference_per_day = fields.Integer(allow_none=True)
    withheld = fields.List(fields.String(), metadata={"description": "Figures withheld"})


class MetricsReportSchema(Schema):
    measure = fields.String()
    basis = fields.String()
    notice = fields.String()
    as_of = fields.Date()
    query = fields.Dict()
    method = fields.Dict()
    disclosure_control = fields.Dict()
    unit_costs = fields.Dict()
    periods = fields.List(fields.Nested(PeriodSchema))
    cells = fields.List(fields.Nested(MetricsCellSchema))
