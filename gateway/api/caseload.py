"""Caseload sync: probation (and police) case-management systems push their caseloads and
pull what other agencies changed about the people in them.

The rules live in `gateway.services.caseload`; these views are the request path around them:
caller -> scope -> idempotency -> decide and apply (service) -> note -> respond.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Response, g, request

from gateway import extensions, idempotency
from gateway.access import note_access, require_scope
from gateway.api.base import ApiBlueprint
from gateway.api.changes import render_feed
from gateway.models import Agency
from gateway.problems import PROBLEM_MEDIA_TYPE, Problem
from gateway.services import caseload
from policies.engine import decide
from policies.vocabulary import FIELDS
from schemas.caseload import CaseloadChangePageSchema, CaseloadSyncResultSchema, CaseloadSyncSchema
from schemas.problem import ProblemSchema
from schemas.referrals import ChangesQuery

blp = ApiBlueprint(
    "caseload",
    __name__,
    url_prefix="/api/v1/caseload",
    description="Caseload sync and the caseload change feed",
)

FEED_PURPOSES = ("caseload-sync", "iom-case-management")
# Caseload changes, plus what happened to the caller's own referrals (outcomes, decisions).
FEED_KINDS = (*caseload.CASELOAD_KINDS, "outcome.added", "referral.status_changed")
SUBMITTED_FIELDS = frozenset(FIELDS["caseload"]) - {"updated_at"}


@blp.route("/sync", methods=["POST"])
@blp.arguments(CaseloadSyncSchema)
@blp.response(200, CaseloadSyncResultSchema)
@blp.alt_response(
    409,
    schema=ProblemSchema,
    content_type=PROBLEM_MEDIA_TYPE,
    description="The snapshot would end more than the allowed share of your open cases",
)
def sync_caseload(body: dict) -> Any:
    """Push up to 1,000 of your case records; every record is reported back.

    Each record is `created`, `updated`, `unchanged` (same content as last time: nothing is
    written) or `rejected` with an RFC 9457 problem (identity conflict, an area your agency
    does not serve, no agreement). By default the valid records are applied; with
    `"atomic": true` any rejection answers 422 with the per-record problems and applies
    nothing. A malformed batch (bad types, unknown fields, bad dates or identifiers, repeated
    local case ids, over 1,000 records) is 422 as a whole and applies nothing.

    `"mode": "snapshot"` says the batch is your whole caseload: your open cases missing from it
    are ended (terminated today). A snapshot that would end more than
    `GATEWAY_SNAPSHOT_MAX_END_SHARE` (default 20%) of your open cases is refused with 409
    unless you send `"confirm_end": true`. A snapshot is a single batch, so it serves caseloads
    of up to 1,000 open cases; larger caseloads sync in `upsert` batches and send closed cases
    with status `terminated`.

    Send `Idempotency-Key`: a retried batch replays the first response and applies nothing
    again; the same key with a different batch is 422."""
    caller = require_scope("caseload:write")
    note_access(action="create", resource_type="caseload")
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        stored = idempotency.claim(
            caller.agency_id, key, idempotency.fingerprint(g.purpose, request.get_json())
        )
        if stored is not None:
            refs = [r["subject_ref"] for r in stored.body.get("results", []) if r["subject_ref"]]
            note_access(subject_ids=refs, details={"replay": True})
            return idempotency.replay(stored)

    session = extensions.database().session
    now = datetime.now(UTC)
    policy = extensions.agreements().current()
    agency = session.get(Agency, caller.agency_id)
    submit = decide(
        policy,
        agency=caller.agency_code,
        agency_kind=caller.agency_kind,
        action="create",
        resource="caseload",
        purpose=g.purpose,
        record=None,
        now=now,
    )
    if not submit.permitted:  # no grant could apply to any record: refuse the batch
        note_access(
            decision="deny",
            reason=submit.reasons[0].code if submit.reasons else "no_agreement",
        )
        raise Problem(
            403,
            "no-caseload-agreement",
            detail="No agreement in force lets your agency sync its caseload for this purpose.",
        )
    records = body["records"]
    try:
        report = caseload.sync_caseload(
            session,
            caseload.SyncingAgency(
                agency.id, agency.code, agency.kind, frozenset(agency.areas or ())
            ),
            records,
            mode=body["mode"],
            atomic=body["atomic"],
            confirm_end=body["confirm_end"],
            max_end_share=extensions.config().snapshot_max_end_share,
            policy=policy,
            purpose=g.purpose,
            now=now,
        )
    except caseload.CaseloadError as error:
        note_access(
            decision="deny",
            reason=error.slug.replace("-", "_"),
            details={"mode": body["mode"], "atomic": body["atomic"], "received": len(records)},
        )
        raise Problem(error.status, error.slug, detail=error.detail, **error.members) from None

    counts = report.counts()
    note_access(
        subject_ids=report.touched,
        fields=_submitted_fields(records),
        decision="permit",
        reason="ok",
        level=",".join(sorted(report.levels - {""})) or None,
        agreement=",".join(sorted({a for a, _ in report.basis})) or None,
        grant=",".join(sorted({gr for _, gr in report.basis})) or None,
        details={
            "mode": body["mode"],
            "atomic": body["atomic"],
            "confirm_end": body["confirm_end"],
            **counts,
            "changes": report.changes,
        },
    )
    result = report.as_dict()  # plain JSON values already, in the documented shape
    if key is not None:
        idempotency.remember(caller.agency_id, key, 200, result, {})
    return Response(json.dumps(result), 200, mimetype="application/json")


def _submitted_fields(records: list[dict[str, Any]]) -> set[str]:
    """The caseload fields the batch carried (for the audit event), and the reference sent back."""
    present = {"subject_ref", "local_case_id", "status", "statutory"}
    for record in records:
        present.update(name for name in record if name in SUBMITTED_FIELDS)
        if len(present) == len(SUBMITTED_FIELDS):
            break
    return present


@blp.route("/changes", methods=["GET"])
@blp.arguments(ChangesQuery, location="query")
@blp.response(200, CaseloadChangePageSchema)
def caseload_changes(query: dict) -> dict:
    """What other agencies changed about the people in your caseload, in commit order.

    New cohort flags and risk from the police, cases opened and closed by other agencies,
    transfer flags between CRC and NPS (both ends see them), and what happened to your own
    referrals. Each entry shows your case and the person only as far as your agreements
    allow at the time of reading (`case` under caseload-sync, `subject` under
    iom-case-management). The cursor is the partner change feed's: opaque and gap-free."""
    caller = require_scope("caseload:read")
    if g.purpose not in FEED_PURPOSES:
        note_access(action="list", resource_type="change", decision="deny", reason="purpose")
        raise Problem(
            403,
            "purpose-not-permitted",
            detail="The caseload feed serves the purposes caseload-sync and iom-case-management.",
        )
    return render_feed(caller.agency_id, query, FEED_KINDS)
