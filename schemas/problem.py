"""RFC 9457 problem details, as documented in the OpenAPI contract."""

from marshmallow import Schema, fields


class ProblemSchema(Schema):
    type = fields.String(required=True, metadata={"example": "urn:iom-gateway:problem:not-found"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    request_id = fields.String(allow_none=True)
    errors = fields.Dict(metadata={"description": "Per-location, per-field validation messages"})
    allowed = fields.List(fields.String(), metadata={"description": "Allowed next states"})
