"""The agreements a caller is party to, and exactly what they grant it."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from gateway import extensions
from gateway.access import current_caller, note_access, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.oauth import Caller
from gateway.problems import Problem
from policies.model import Agreement
from schemas.agreements import AgreementListSchema, AgreementSchema

blp = ApiBlueprint(
    "agreements",
    __name__,
    url_prefix="/api/v1/agreements",
    description="Information-sharing agreements",
)


@blp.route("", methods=["GET"])
@blp.response(200, AgreementListSchema)
@requires_scope("agreements:read")
def list_agreements() -> dict:
    caller = current_caller()
    note_access(action="list", resource_type="agreement", decision="permit", reason="ok")
    mine = [
        a
        for a in extensions.agreements().current().agreements
        if caller.agency_code in a.party_codes
    ]
    return {"items": [_view(a, caller) for a in sorted(mine, key=lambda a: a.id)]}


@blp.route("/<string:agreement_id>", methods=["GET"])
@blp.response(200, AgreementSchema)
@requires_scope("agreements:read")
def get_agreement(agreement_id: str) -> dict:
    caller = current_caller()
    note_access(
        action="read", resource_type="agreement", details={"agreement_id": agreement_id[:64]}
    )
    for agreement in extensions.agreements().current().agreements:
        if agreement.id == agreement_id and caller.agency_code in agreement.party_codes:
            note_access(decision="permit", reason="ok", agreement=agreement.label)
            return _view(agreement, caller)
    note_access(decision="deny", reason="not_a_party")
    raise Problem(404, detail="No such agreement.")


def _view(agreement: Agreement, caller: Caller) -> dict:
    today = datetime.now(UTC).date()
    grants = [
        {**asdict(g), "conditions": _conditions(g.conditions)}
        for g in agreement.grants
        if caller.agency_code in g.recipients or f"kind:{caller.agency_kind}" in g.recipients
    ]
    for grant in grants:
        grant["fields_"] = grant.pop("fields")
    return {
        "id": agreement.id,
        "version": agreement.version,
        "title": agreement.title,
        "parties": [asdict(p) for p in agreement.parties],
        "purposes": [asdict(p) for p in agreement.purposes],
        "lawful_basis": list(agreement.lawful_basis),
        "valid_from": agreement.valid_from,
        "valid_until": agreement.valid_until,
        "review_by": agreement.review_by,
        "retention": str(agreement.retention),
        "in_force": agreement.in_force(today),
        "grants_to_you": grants,
    }


def _conditions(conditions) -> dict:  # type: ignore[no-untyped-def]
    return {
        k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(conditions).items() if v
    }
