"""Subjects on the wire. Every field is optional: what appears is what the caller's
agreements release, at the level they release it (see `disclosure`)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from schemas.common import PageQuery, PageSchema, StrictSchema, UTCDateTime

AREA = validate.OneOf(["BIR", "COV", "DUD", "SAN", "SOL", "WAL", "WOL"])
COHORT = validate.OneOf(["PPO", "HCCU", "SAC", "DA", "CSE", "GANG", "FEMALE", "YOUTH", "U12M"])


class SubjectListQuery(PageQuery):
    cohort = fields.String(validate=COHORT)
    area = fields.String(validate=AREA)
    updated_since = UTCDateTime()


class SubjectSearchBody(StrictSchema):
    scheme = fields.String(required=True, validate=validate.OneOf(["PNC", "CRN", "NOMIS"]))
    value = fields.String(required=True, validate=validate.Length(min=1, max=40))


class RiskSchema(Schema):
    reoffending_score = fields.Integer(allow_none=True)
    reoffending_band = fields.String(allow_none=True)
    serious_harm_level = fields.String(allow_none=True)
    assessed_at = UTCDateTime(allow_none=True)


class ManagementSchema(Schema):
    agency = fields.String()
    statutory = fields.Boolean()
    offender_manager_ref = fields.String(allow_none=True)
    since = fields.Date()


class VictimLinkSchema(Schema):
    victim_ref = fields.String()
    relationship = fields.String()


class DisclosureSchema(Schema):
    level = fields.String(metadata={"description": "identified or pseudonymised"})
    basis = fields.List(fields.String(), metadata={"description": "agreement@version#grant"})


class SubjectSchema(Schema):
    ref = fields.String(metadata={"description": "Internal id, or your pseudonym for the person"})
    given_name = fields.String()
    family_name = fields.String()
    date_of_birth = fields.Date()
    year_of_birth = fields.Integer()
    age_band = fields.String()
    gender = fields.String()
    ethnicity = fields.String(allow_none=True)
    address_line = fields.String(allow_none=True)
    postcode = fields.String(allow_none=True)
    postcode_district = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    identifiers = fields.Dict(keys=fields.String(), values=fields.String())
    area = fields.String()
    policing_unit = fields.String(allow_none=True)
    cohorts = fields.List(fields.String())
    risk = fields.Nested(RiskSchema, allow_none=True)
    needs = fields.Dict(keys=fields.String(), values=fields.String())
    management = fields.List(fields.Nested(ManagementSchema))
    linked_victims = fields.List(fields.Nested(VictimLinkSchema))
    updated_at = UTCDateTime()
    disclosure = fields.Nested(DisclosureSchema)


class SubjectPageSchema(PageSchema):
    items = fields.List(fields.Nested(SubjectSchema))
