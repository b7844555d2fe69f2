"""Caseload sync: probation (and police) case-management systems push their caseloads and
pull what other agencies changed about the people in them.

The rules live in `gateway.services.caseload`; these views are the request path around them:
caller -> scope -> idempotency -> decide and apply (service) -> note -> respond.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import orjson
from flask import Response, g, request

from gateway import extensions, idempotency
from gateway.access import current_caller, note_access, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.api.changes import render_feed
from gateway.models import Agency
from gateway.oauth import Caller
from gateway.openapi import (
    IDEMPOTENCY_IN_PROGRESS,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_REUSED,
    RETRY_AFTER,
)
from gateway.problems import PROBLEM_MEDIA_TYPE, Problem
from gateway.services import caseload, snapshots
from policies.engine import PolicySet, decide
from policies.vocabulary import FIELDS
from schemas.caseload import (
    CaseloadChangePageSchema,
    CaseloadSyncResultSchema,
    CaseloadSyncSchema,
    SnapshotCompleteSchema,
    SnapshotOpenSchema,
    SnapshotSchema,
)
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
@blp.doc(parameters=[IDEMPOTENCY_KEY_HEADER])
@blp.alt_response(
    409,
    schema=ProblemSchema,
    content_type=PROBLEM_MEDIA_TYPE,
    description="The snapshot would end more than the allowed share of your open cases, "
    "the snapshot session the batch names is closed or expired, or " + IDEMPOTENCY_IN_PROGRESS,
    headers=RETRY_AFTER,
)
@blp.alt_response(
    422,
    schema=ProblemSchema,
    content_type=PROBLEM_MEDIA_TYPE,
    description="The batch failed validation (nothing applied), an atomic batch had a "
    "rejected record (nothing applied), or " + IDEMPOTENCY_KEY_REUSED,
)
@blp.alt_response(
    404,
    schema=ProblemSchema,
    content_type=PROBLEM_MEDIA_TYPE,
    description="No snapshot session of your agency has the `snapshot_id` given",
)
@requires_scope("caseload:write")
def sync_caseload(body: dict) -> Any:
    """Push up to 1,000 of your case records; every record is reported back.

    Each record is `created`, `updated`, `unchanged` (same content as last time: nothing is
    written) or `rejected` with an RFC 9457 problem (identity conflict, an area your agency
    does not serve, no agreement). By default the valid records are applied; with
    `"atomic": true` any rejection answers 422 with the per-record problems and applies
    nothing. A malformed batch (bad types, unknown fields, bad dates or identifiers, repeated
    local case ids, over 1,000 records) is 422 as a whole and applies nothing.

    A caseload larger than one batch is snapshotted in a session: open one
    (`POST /caseload/snapshots`), send your batches with its `"snapshot_id"`, then complete it
    (`POST /caseload/snapshots/{id}/complete`), which ends your open cases that no batch
    mentioned. A batch naming an unknown snapshot is 404, a closed or expired one 409.

    `"mode": "snapshot"` is the one-batch case: the batch is your whole caseload and your open
    cases missing from it are ended (terminated today). Either way, a snapshot that would end
    more than `GATEWAY_SNAPSHOT_MAX_END_SHARE` (default 20%) of your open cases is refused with
    409 unless you send `"confirm_end": true`.

    Send `Idempotency-Key`: a retried batch replays the first response and applies nothing
    again; the same key with a different batch is 422."""
    caller = current_caller()
    note_access(action="create", resource_type="caseload")
    now = datetime.now(UTC)
    policy = extensions.agreements().current()
    agency = _syncing_agency(caller, policy, now)  # a replay too: it discloses the results again
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
    records = body["records"]
    snapshot_id = str(body["snapshot_id"]) if body.get("snapshot_id") else None
    details = {"mode": body["mode"], "atomic": body["atomic"], "snapshot_id": snapshot_id}
    try:
        tagged = snapshots.for_batch(session, agency.id, snapshot_id, now) if snapshot_id else None
        report = caseload.sync_caseload(
            session,
            agency,
            records,
            mode=body["mode"],
            atomic=body["atomic"],
            confirm_end=body["confirm_end"],
            max_end_share=extensions.config().snapshot_max_end_share,
            policy=policy,
            purpose=g.purpose,
            now=now,
        )
        snapshots.remember_batch(
            session, agency.id, [r["local_case_id"] for r in records], tagged, now
        )
    except caseload.CaseloadError as error:
        _refused(error, {**details, "received": len(records)})

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
            **details,
            "confirm_end": body["confirm_end"],
            **counts,
            "changes": report.changes,
        },
    )
    result = report.as_dict()  # plain JSON values already, in the documented shape
    result["snapshot_id"] = snapshot_id
    if key is not None:
        idempotency.remember(caller.agency_id, key, 200, result, {})
    return Response(orjson.dumps(result), 200, mimetype="application/json")


def _syncing_agency(caller: Caller, policy: PolicySet, now: datetime) -> caseload.SyncingAgency:
    """The caller's agency, provided some agreement in force lets it sync its caseload for
    the declared purpose (else no grant could apply to any record: the request is refused)."""
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
    if not submit.permitted:
        note_access(
            decision="deny",
            reason=submit.reasons[0].code if submit.reasons else "no_agreement",
        )
        raise Problem(
            403,
            "no-caseload-agreement",
            detail="No agreement in force lets your agency sync its caseload for this purpose.",
        )
    agency = extensions.database().session.get(Agency, caller.agency_id)
    return caseload.SyncingAgency(
        agency.id, agency.code, agency.kind, frozenset(agency.areas or ())
    )


def _refused(error: caseload.CaseloadError, details: dict[str, Any]) -> NoReturn:
    note_access(decision="deny", reason=error.slug.replace("-", "_"), details=details)
    raise Problem(error.status, error.slug, detail=error.detail, **error.members) from None


# --- snapshots sent in many batches ---------------------------------------------------------


@blp.route("/snapshots", methods=["POST"])
@blp.arguments(SnapshotOpenSchema)
@blp.response(201, SnapshotSchema)
@requires_scope("caseload:write")
def open_snapshot(_: dict) -> dict:
    """Open a snapshot of your caseload that you will send in several batches.

    Send each batch to `POST /caseload/sync` with `"snapshot_id"`: it is applied as usual and
    its local case ids are remembered (batches you send without the id while the snapshot is
    open count too). Then complete it to end your open cases that no batch mentioned. It
    expires, ending nothing, after `GATEWAY_SNAPSHOT_TTL_HOURS` (24). Opening a snapshot
    abandons the one your agency still had open."""
    caller = current_caller()
    note_access(action="create", resource_type="caseload_snapshot")
    now = datetime.now(UTC)
    agency = _syncing_agency(caller, extensions.agreements().current(), now)
    session = extensions.database().session
    ttl = timedelta(hours=extensions.config().snapshot_ttl_hours)
    snapshot = snapshots.open_snapshot(session, agency.id, now, ttl)
    note_access(decision="permit", reason="ok", details={"snapshot_id": snapshot.id})
    return snapshots.view(snapshot, session, now)


@blp.route("/snapshots/<string:snapshot_id>", methods=["GET"])
@blp.response(200, SnapshotSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MEDIA_TYPE)
@requires_scope("caseload:write")
def get_snapshot(snapshot_id: str) -> dict:
    """Your snapshot: its status, batches and distinct cases seen so far, and once completed
    what it ended."""
    caller = current_caller()
    note_access(action="read", resource_type="caseload_snapshot")
    session, now = extensions.database().session, datetime.now(UTC)
    try:
        snapshot = snapshots.find(session, caller.agency_id, snapshot_id)
    except caseload.CaseloadError as error:
        _refused(error, {})
    note_access(decision="permit", reason="ok", details={"snapshot_id": snapshot.id})
    return snapshots.view(snapshot, session, now)


@blp.route("/snapshots/<string:snapshot_id>/complete", methods=["POST"])
@blp.arguments(SnapshotCompleteSchema)
@blp.response(200, SnapshotSchema)
@blp.alt_response(
    409,
    schema=ProblemSchema,
    content_type=PROBLEM_MEDIA_TYPE,
    description="It would end more than the allowed share of your open cases (it stays open: "
    "send the missing batches, or confirm), or it was abandoned or expired",
)
@requires_scope("caseload:write")
def complete_snapshot(body: dict, snapshot_id: str) -> dict:
    """End your open cases that no batch mentioned since the snapshot was opened.

    They are terminated today and the people's other managers are told in their feeds. More
    than `GATEWAY_SNAPSHOT_MAX_END_SHARE` (20%) of your open cases needs
    `"confirm_end": true`; otherwise 409 with `would_end` and `open_cases`, and nothing
    changes. A snapshot with no batch is 422. Completing a completed snapshot is safe: it
    answers the first completion again and ends nothing more. An abandoned or expired one is
    409."""
    caller = current_caller()
    note_access(action="update", resource_type="caseload_snapshot")
    now = datetime.now(UTC)
    agency = _syncing_agency(caller, extensions.agreements().current(), now)
    session = extensions.database().session
    details: dict[str, Any] = {"snapshot_id": snapshot_id[:36], "confirm_end": body["confirm_end"]}
    try:
        done = snapshots.complete(
            session,
            agency,
            snapshot_id,
            confirm_end=body["confirm_end"],
            max_end_share=extensions.config().snapshot_max_end_share,
            now=now,
        )
    except caseload.CaseloadError as error:
        _refused(error, details)
    result = done.snapshot.result or {}
    note_access(
        subject_ids=done.ended_subjects,
        decision="permit",
        reason="ok",
        details={
            **details,
            "replay": done.replayed,
            "ended": 0 if done.replayed else len(result.get("ended") or ()),
            "open_cases": result.get("open_cases"),
            "changes": done.changes,
        },
    )
    return snapshots.view(done.snapshot, session, now)


@blp.route("/snapshots/<string:snapshot_id>", methods=["DELETE"])
@blp.response(200, SnapshotSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MEDIA_TYPE)
@blp.alt_response(409, schema=ProblemSchema, content_type=PROBLEM_MEDIA_TYPE)
@requires_scope("caseload:write")
def abandon_snapshot(snapshot_id: str) -> dict:
    """Abandon the snapshot: nothing is ended (the batches already applied stay applied).
    A completed snapshot cannot be abandoned (409)."""
    caller = current_caller()
    note_access(action="delete", resource_type="caseload_snapshot")
    session, now = extensions.database().session, datetime.now(UTC)
    try:
        snapshot = snapshots.abandon(session, caller.agency_id, snapshot_id, now)
    except caseload.CaseloadError as error:
        _refused(error, {})
    note_access(decision="permit", reason="ok", details={"snapshot_id": snapshot.id})
    return snapshots.view(snapshot, session, now)


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
@requires_scope("caseload:read")
def caseload_changes(query: dict) -> dict:
    """What other agencies changed about the people in your caseload, in commit order.

    New cohort flags and risk from the police, cases opened and closed by other agencies,
    transfer flags between CRC and NPS (both ends see them), and what happened to your own
    referrals. Each entry shows your case and the person only as far as your agreements
    allow at the time of reading (`case` under caseload-sync, `subject` under
    iom-case-management). The cursor is the partner change feed's: opaque and gap-free."""
    caller = current_caller()
    if g.purpose not in FEED_PURPOSES:
        note_access(action="list", resource_type="change", decision="deny", reason="purpose")
        raise Problem(
            403,
            "purpose-not-permitted",
            detail="The caseload feed serves the purposes caseload-sync and iom-case-management.",
        )
    return render_feed(caller.agency_id, query, FEED_KINDS, caseload=True)
