"""Shared pieces of the contract: strict schemas, UTC datetimes, cursor pagination."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class StrictSchema(Schema):
    """Unknown fields are errors, in bodies and query strings alike."""

    class Meta:
        unknown = RAISE


class UTCDateTime(fields.AwareDateTime):
    """ISO 8601 with an offset on input; always UTC with `Z` on output."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _serialize(self, value: datetime | None, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if isinstance(value, str) and len(value) > 40:
            raise ValidationError("Not a valid datetime.")
        try:
            return super()._deserialize(value, attr, data, **kwargs).astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
            raise ValidationError("Not a valid datetime.") from None


class PageQuery(StrictSchema):
    cursor = fields.String(validate=validate.Length(max=200), metadata={"description": "Opaque"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class PageSchema(Schema):
    next_cursor = fields.String(allow_none=True, metadata={"description": "Pass as `cursor`"})
