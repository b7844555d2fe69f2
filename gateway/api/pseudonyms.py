"""Pseudonym rotation for recipients: fetch the old-to-new map of your own pseudonyms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from marshmallow import fields, validate

from gateway import extensions
from gateway.access import current_caller, note_access, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.services.pseudonymisation import rotation_map_for
from schemas.common import StrictSchema

blp = ApiBlueprint(
    "pseudonyms", __name__, url_prefix="/api/v1/pseudonyms", description="Pseudonym rotation"
)


class RotationQuery(StrictSchema):
    from_version = fields.Integer(required=True, validate=validate.Range(min=1))


class RotationSchema(StrictSchema):
    from_version = fields.Integer()
    to_version = fields.Integer()
    pseudonyms = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "old -> new"}
    )


@blp.route("/rotation", methods=["GET"])
@blp.arguments(RotationQuery, location="query")
@blp.response(200, RotationSchema)
@requires_scope("subjects:read")
def rotation(query: dict) -> dict:
    """Map each pseudonym you were given under `from_version` to its current form.

    Only pseudonyms you could still use are mapped: within the old version's grace period,
    given under an agreement in force that you are a party to."""
    caller = current_caller()
    note_access(
        action="read",
        resource_type="pseudonym_map",
        decision="permit",
        reason="ok",
        details={"from_version": query["from_version"]},
    )
    keys = extensions.keys()
    mapping = rotation_map_for(
        extensions.database().session,
        keys,
        extensions.agreements().current(),
        caller.agency_code,
        query["from_version"],
        timedelta(days=extensions.config().pseudonym_grace_days),
        datetime.now(UTC),
    )
    return {
        "from_version": query["from_version"],
        "to_version": keys.pseudonym_key_version,
        "pseudonyms": mapping,
    }
