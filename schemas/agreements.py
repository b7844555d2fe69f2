"""Agreements as a party sees them: the terms, and what they grant this caller."""

from marshmallow import Schema, fields


class GrantSchema(Schema):
    id = fields.String()
    purposes = fields.List(fields.String())
    resource = fields.String()
    actions = fields.List(fields.String())
    conditions = fields.Dict()
    fields_ = fields.List(fields.String(), data_key="fields")
    level = fields.String()
    age_band = fields.Boolean(
        metadata={
            "description": "True: under this grant date_of_birth is released as an age band "
            "(such as 25-34) rather than a year of birth, unless another grant that applies "
            "releases it more fully"
        }
    )


class PurposeSchema(Schema):
    code = fields.String()
    description = fields.String()


class AgreementSchema(Schema):
    id = fields.String()
    version = fields.Integer()
    title = fields.String()
    parties = fields.List(fields.Dict())
    purposes = fields.List(fields.Nested(PurposeSchema))
    lawful_basis = fields.List(fields.String())
    valid_from = fields.Date()
    valid_until = fields.Date()
    review_by = fields.Date()
    retention = fields.String()
    in_force = fields.Boolean()
    grants_to_you = fields.List(fields.Nested(GrantSchema))


class AgreementListSchema(Schema):
    items = fields.List(fields.Nested(AgreementSchema))
