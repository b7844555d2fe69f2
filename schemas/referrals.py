"""Referrals, their lifecycle and outcomes, and the partners' change feed, on the wire."""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from policies.vocabulary import PATHWAYS
from schemas.common import PageQuery, PageSchema, StrictSchema, UTCDateTime
from schemas.subjects import SubjectSchema

SERVICES = [
    "peer_mentoring",
    "dv_perpetrator_programme",
    "accommodation",
    "education_training_employment",
    "substance_misuse",
    "mental_health",
]
REASONS = [
    "prolific_offending",
    "acquisitive_crime",
    "substance_misuse",
    "housing_need",
    "unemployment",
    "peer_influence",
    "domestic_abuse",
    "mental_health",
    "family_breakdown",
    "debt",
    "leaving_custody",
    "other",
]
DECLINE_REASONS = [
    "capacity",
    "not_eligible",
    "risk_too_high",
    "person_declined",
    "duplicate",
    "other",
]
OUTCOME_TYPES = [
    "engagement_started",
    "appointment_attended",
    "appointment_missed",
    "intervention_completed",
    "accommodation_secured",
    "ete_started",
    "substance_treatment_started",
    "disengaged",
    "further_offence_reported",
]
OFFENCE_TYPES = [
    "burglary_dwelling",
    "burglary_other",
    "theft_of_vehicle",
    "theft_from_vehicle",
    "robbery",
    "shoplifting",
    "other_theft",
    "violence_with_injury",
    "violence_without_injury",
    "criminal_damage",
    "drug_offence",
    "sexual_offence",
    "arson",
    "fraud",
    "other",
]
STATUSES = ["submitted", "accepted", "declined", "withdrawn", "engaged", "completed", "disengaged"]


class ConsentSchema(StrictSchema):
    status = fields.String(
        required=True, validate=validate.OneOf(["pending", "given", "refused", "not_required"])
    )
    lawful_basis = fields.String(
        validate=validate.Length(min=3, max=200),
        metadata={"description": "Required when consent is not required"},
    )
    recorded_at = UTCDateTime()
    recorded_by = fields.String(
        validate=validate.Length(max=128), metadata={"description": "Staff reference"}
    )
    method = fields.String(validate=validate.OneOf(["written", "verbal", "electronic"]))

    @validates_schema
    def _basis_when_not_required(self, data: dict, **_: object) -> None:
        if data.get("status") == "not_required" and not data.get("lawful_basis"):
            raise ValidationError(
                "state the lawful basis when consent is not required", "lawful_basis"
            )


class ReferralCreateSchema(StrictSchema):
    subject_ref = fields.String(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Your reference for the person (id or pseudonym)"},
    )
    to_agency = fields.String(required=True, validate=validate.Regexp(r"^[A-Z][A-Z0-9-]{1,31}\Z"))
    service = fields.String(required=True, validate=validate.OneOf(SERVICES))
    pathways = fields.List(
        fields.String(validate=validate.OneOf(PATHWAYS)),
        required=True,
        validate=validate.Length(min=1, max=7),
    )
    reasons = fields.List(
        fields.String(validate=validate.OneOf(REASONS)),
        required=True,
        validate=validate.Length(min=1, max=12),
    )
    summary = fields.String(validate=validate.Length(max=2000))
    urgency = fields.String(load_default="routine", validate=validate.OneOf(["routine", "urgent"]))
    share_risk = fields.List(
        fields.String(validate=validate.OneOf(["serious_harm", "reoffending"])),
        load_default=list,
        metadata={"description": "Which risk information to share"},
    )
    consent = fields.Nested(ConsentSchema, required=True)


class TransitionSchema(StrictSchema):
    reason = fields.String(validate=validate.OneOf(DECLINE_REASONS))


class HistorySchema(Schema):
    status = fields.String()
    from_status = fields.String(allow_none=True)
    at = UTCDateTime()
    agency = fields.String()
    reason = fields.String(allow_none=True)
    on_behalf_of = fields.String(allow_none=True)


class ReferralSchema(Schema):
    ref = fields.String()
    subject_ref = fields.String()
    from_agency = fields.String()
    to_agency = fields.String()
    service = fields.String()
    pathways = fields.List(fields.String())
    reasons = fields.List(fields.String())
    summary = fields.String(allow_none=True)
    urgency = fields.String()
    risk_shared = fields.Dict()
    consent = fields.Dict()
    status = fields.String()
    history = fields.List(fields.Nested(HistorySchema))
    overdue = fields.Boolean()
    created_at = UTCDateTime()
    updated_at = UTCDateTime()
    allowed_transitions = fields.List(fields.String())
    subject = fields.Nested(
        SubjectSchema,
        allow_none=True,
        metadata={"description": "The person, as far as your agreements allow"},
    )
    disclosure = fields.Dict()


class ReferralListQuery(PageQuery):
    direction = fields.String(validate=validate.OneOf(["inbound", "outbound"]))
    status = fields.String(validate=validate.OneOf(STATUSES))
    updated_since = UTCDateTime()


class ReferralPageSchema(PageSchema):
    items = fields.List(fields.Nested(ReferralSchema))


class OutcomeDetailSchema(StrictSchema):
    offence_type = fields.String(validate=validate.OneOf(OFFENCE_TYPES))
    appointment_kind = fields.String(validate=validate.OneOf(["one_to_one", "group", "assessment"]))
    hours = fields.Integer(validate=validate.Range(min=0, max=1000))


class OutcomeCreateSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.OneOf(OUTCOME_TYPES))
    occurred_on = fields.Date(required=True)
    detail = fields.Nested(OutcomeDetailSchema, load_default=dict)

    @validates_schema
    def _offence_needs_type(self, data: dict, **_: object) -> None:
        if data.get("type") == "further_offence_reported" and not data.get("detail", {}).get(
            "offence_type"
        ):
            raise ValidationError("a further offence needs detail.offence_type", "detail")
        if isinstance(data.get("occurred_on"), date) and data["occurred_on"].year < 2000:
            raise ValidationError("implausible date", "occurred_on")


class OutcomeSchema(Schema):
    ref = fields.String()
    referral_ref = fields.String()
    type = fields.String()
    occurred_on = fields.Date()
    detail = fields.Dict()
    recorded_by = fields.String()
    recorded_at = UTCDateTime()


class OutcomeListSchema(Schema):
    items = fields.List(fields.Nested(OutcomeSchema))


class ChangesQuery(StrictSchema):
    since = fields.String(
        validate=validate.Length(max=200), metadata={"description": "Opaque cursor"}
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class ChangeSchema(Schema):
    cursor = fields.String(metadata={"description": "Resume after this change"})
    kind = fields.String()
    occurred_at = UTCDateTime()
    detail = fields.Dict()
    referral = fields.Nested(ReferralSchema, allow_none=True)
    outcome = fields.Nested(OutcomeSchema, allow_none=True)


class ChangePageSchema(Schema):
    items = fields.List(fields.Nested(ChangeSchema))
    next_cursor = fields.String(metadata={"description": "Pass as `since` next time (never null)"})
