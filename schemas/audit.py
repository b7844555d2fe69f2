"""The auditor's view of the log: events, proofs, checkpoints, subject-access answers."""

from marshmallow import Schema, fields, validate

from schemas.common import PageQuery, PageSchema, StrictSchema, UTCDateTime

HEX_LIST = fields.List(fields.String(), metadata={"description": "hex SHA-256 hashes"})


class EventQuery(PageQuery):
    time_from = UTCDateTime()
    time_to = UTCDateTime()
    agency = fields.String(validate=validate.Length(max=32))
    client_id = fields.String(validate=validate.Length(max=64))
    # Parsed, so that every spelling of the id (upper case, braces, no hyphens) finds the
    # stored form: an empty page for one of them would read as "nobody saw this person".
    subject = fields.UUID()
    purpose = fields.String(validate=validate.Length(max=64))
    decision = fields.String(validate=validate.OneOf(["permit", "deny"]))
    agreement = fields.String(validate=validate.Length(max=80))
    action = fields.String(validate=validate.Length(max=32))
    kind = fields.String(validate=validate.Length(max=32))


class EventSchema(Schema):
    seq = fields.Integer(allow_none=True, metadata={"description": "Leaf index; null until sealed"})
    event = fields.Dict(metadata={"description": "The canonical event"})


class EventPageSchema(PageSchema):
    items = fields.List(fields.Nested(EventSchema))


class ProvenEventSchema(EventSchema):
    leaf_hash = fields.String()
    tree_size = fields.Integer(allow_none=True)
    inclusion_proof = fields.List(fields.String(), allow_none=True)
    checkpoint = fields.String(allow_none=True, metadata={"description": "Signed note"})


class ReceiptSchema(Schema):
    format = fields.String()
    seq = fields.Integer()
    event = fields.Dict()
    leaf_hash = fields.String()
    tree_size = fields.Integer()
    inclusion_proof = HEX_LIST
    checkpoint = fields.String()
    key_name = fields.String()
    public_key_id = fields.String()


class CheckpointSchema(Schema):
    tree_size = fields.Integer()
    root_hash = fields.String()
    timestamp = fields.Integer(metadata={"description": "Unix seconds"})
    key_name = fields.String()
    public_key_id = fields.String()
    note = fields.String(metadata={"description": "C2SP signed-note checkpoint"})
    public_key_pem = fields.String()


class ConsistencyQuery(StrictSchema):
    from_size = fields.Integer(required=True, validate=validate.Range(min=0))
    to_size = fields.Integer(required=True, validate=validate.Range(min=0))


class ConsistencySchema(Schema):
    from_size = fields.Integer()
    to_size = fields.Integer()
    proof = HEX_LIST


class AccessSchema(Schema):
    agency = fields.String(allow_none=True)
    purpose = fields.String(allow_none=True)
    agreement = fields.String(allow_none=True)
    first_access = UTCDateTime()
    last_access = UTCDateTime()
    count = fields.Integer()


class SubjectAccessesSchema(Schema):
    subject = fields.String()
    accesses = fields.List(fields.Nested(AccessSchema))


class ExportQuery(StrictSchema):
    format = fields.String(load_default="jsonl", validate=validate.OneOf(["jsonl", "csv"]))
    from_seq = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**63 - 1))
