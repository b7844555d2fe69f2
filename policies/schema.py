"""marshmallow schemas for the structure of an agreement document.

These check shape, types and closed vocabularies field by field; rules that relate one part
of the document to another (declared purposes, parties, the resource's fields) live in
`policies.rules` because marshmallow skips schema-level validators once a field has failed,
and the loader must report every problem in one pass.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from policies.model import Retention
from policies.vocabulary import (
    ACTIONS,
    AREAS,
    COHORTS,
    LEVELS,
    PARTY_ROLES,
    RELATIONSHIPS,
    RESOURCES,
)

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z"  # \Z: "$" would let a trailing newline through
_slug = validate.Regexp(SLUG, error="must be a lower-case slug such as core-iom")
_text = validate.Length(min=1, error="must not be empty")


def _one_of(choices: Any) -> validate.OneOf:
    return validate.OneOf(sorted(choices), error="{input!r} is not one of: {choices}")


def _non_empty(what: str) -> validate.Length:
    return validate.Length(min=1, error=f"must list at least one {what}")


class StrictDate(fields.Date):
    """A calendar date; a datetime is refused because validity is decided per day."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        if isinstance(value, datetime):
            raise ValidationError("must be a date (YYYY-MM-DD), not a date and time")
        if isinstance(value, date):
            return value
        return super()._deserialize(value, attr, data, **kwargs)


class RetentionField(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Retention:
        try:
            return Retention.parse(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class PartySchema(_Strict):
    agency = fields.String(required=True, validate=_text)
    role = fields.String(required=True, validate=_one_of(PARTY_ROLES))


class PurposeSchema(_Strict):
    code = fields.String(required=True, validate=_slug)
    description = fields.String(required=True, validate=_text)


class ConditionsSchema(_Strict):
    # An empty list is refused: "cohorts: []" reads as "no cohort" to some and "any" to others.
    cohorts = fields.List(fields.String(validate=_one_of(COHORTS)), validate=_non_empty("cohort"))
    areas = fields.List(fields.String(validate=_one_of(AREAS)), validate=_non_empty("area"))
    min_age = fields.Integer(strict=True, validate=validate.Range(0, 130))
    max_age = fields.Integer(strict=True, validate=validate.Range(0, 130))
    relationships = fields.List(
        fields.String(validate=_one_of(RELATIONSHIPS)), validate=_non_empty("relationship")
    )


class GrantSchema(_Strict):
    id = fields.String(required=True, validate=_slug)
    recipients = fields.List(
        fields.String(validate=_text), required=True, validate=_non_empty("recipient")
    )
    purposes = fields.List(fields.String(), required=True, validate=_non_empty("purpose"))
    resource = fields.String(required=True, validate=_one_of(RESOURCES))
    actions = fields.List(
        fields.String(validate=_one_of(ACTIONS)), required=True, validate=_non_empty("action")
    )
    conditions = fields.Nested(ConditionsSchema, load_default=dict)
    fields_ = fields.List(
        fields.String(), data_key="fields", required=True, validate=_non_empty("field")
    )
    level = fields.String(required=True, validate=_one_of(LEVELS))
    age_band = fields.Boolean(truthy={True}, falsy={False}, load_default=False)


class AgreementSchema(_Strict):
    id = fields.String(required=True, validate=_slug)
    version = fields.Integer(strict=True, required=True, validate=validate.Range(min=1))
    title = fields.String(required=True, validate=_text)
    parties = fields.List(
        fields.Nested(PartySchema),
        required=True,
        validate=validate.Length(min=2, error="an agreement needs at least two parties"),
    )
    purposes = fields.List(
        fields.Nested(PurposeSchema), required=True, validate=_non_empty("purpose")
    )
    lawful_basis = fields.List(
        fields.String(validate=_text), required=True, validate=_non_empty("lawful basis")
    )
    valid_from = StrictDate(required=True)
    valid_until = StrictDate(required=True)
    review_by = StrictDate(required=True)
    retention = RetentionField(required=True)
    grants = fields.List(fields.Nested(GrantSchema), required=True, validate=_non_empty("grant"))
