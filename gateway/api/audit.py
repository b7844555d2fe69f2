"""The auditor's API: query the log, prove an event is in it, prove it was only appended to,
answer a subject access request, export for offline verification.

Only the IG audit agency may call it, and every call is itself audited.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator

from cryptography.hazmat.primitives import serialization
from flask import Response, stream_with_context

from audit import query as audit_query
from gateway import extensions
from gateway.access import current_caller, note_access, requires_scope
from gateway.api.base import ApiBlueprint
from gateway.db import begin_read_phase
from gateway.oauth import Caller
from gateway.pagination import MAX_POSITION, decode_cursor, encode_cursor
from gateway.problems import Problem
from schemas.audit import (
    CheckpointSchema,
    ConsistencyQuery,
    ConsistencySchema,
    EventPageSchema,
    EventQuery,
    ExportQuery,
    ProvenEventSchema,
    ReceiptSchema,
    SubjectAccessesSchema,
)

blp = ApiBlueprint(
    "audit", __name__, url_prefix="/api/v1/audit", description="The audit log (IG auditors)"
)

CSV_COLUMNS = (
    "seq",
    "leaf_hash",
    "time",
    "kind",
    "agency",
    "client_id",
    "on_behalf_of",
    "purpose",
    "method",
    "route",
    "action",
    "resource_type",
    "decision",
    "reason",
    "status",
    "agreement",
    "grant",
    "disclosure_level",
    "subject_ids",
    "fields",
    "request_id",
    "event",
)


def require_auditor(action: str) -> Caller:
    caller = current_caller()
    note_access(action=action, resource_type="audit")
    if caller.agency_kind != "ig_audit":
        note_access(decision="deny", reason="not_ig_audit")
        raise Problem(403, detail="Only the information-governance audit team reads the audit log.")
    note_access(decision="permit", reason="ok")
    return caller


def _session():  # type: ignore[no-untyped-def]
    return extensions.database().session


@blp.route("/events", methods=["GET"])
@blp.arguments(EventQuery, location="query")
@blp.response(200, EventPageSchema)
@requires_scope("audit:read")
def list_events(query: dict) -> dict:
    require_auditor("list")
    filters = {
        k: query[k]
        for k in EventQuery._declared_fields
        if k in query and k not in ("cursor", "limit")
    }
    if "subject" in filters:
        filters["subject_id"] = str(filters.pop("subject"))
    note_access(details={k: str(v) for k, v in filters.items()})
    after = decode_cursor(query.get("cursor"), "after")
    if after is not None and not isinstance(after["after"], int):
        raise Problem(400, "bad-cursor", detail="The cursor is not one this list issued.")
    rows = audit_query.list_events(
        _session(), filters, after_id=after["after"] if after else None, limit=query["limit"] + 1
    )
    page, more = rows[: query["limit"]], len(rows) > query["limit"]
    items = [
        {"seq": r.pop("seq"), "event": {k: v for k, v in r.items() if k != "row_id"}} for r in page
    ]
    cursor = encode_cursor({"after": page[-1]["row_id"]}) if more else None
    return {"items": items, "next_cursor": cursor}


@blp.route("/events/<int:seq>", methods=["GET"])
@blp.response(200, ProvenEventSchema)
@requires_scope("audit:read")
def get_event(seq: int) -> dict:
    require_auditor("read")
    note_access(details={"seq": seq})
    session = _session()
    event = audit_query.get_event(session, seq) if seq <= MAX_POSITION else None
    if event is None:
        raise Problem(404, detail="No sealed event has this sequence number.")
    checkpoint = audit_query.latest_checkpoint(session)
    covered = checkpoint is not None and checkpoint.tree_size > seq
    proof = audit_query.inclusion_proof(session, seq, checkpoint.tree_size) if covered else None
    leaf = event.pop("leaf_hash")
    event.pop("row_id"), event.pop("seq")
    return {
        "seq": seq,
        "event": event,
        "leaf_hash": leaf,
        "tree_size": checkpoint.tree_size if covered else None,
        "inclusion_proof": [p.hex() for p in proof] if proof is not None else None,
        "checkpoint": checkpoint.note if covered else None,
    }


@blp.route("/events/<int:seq>/receipt", methods=["GET"])
@blp.response(200, ReceiptSchema)
@requires_scope("audit:read")
def get_receipt(seq: int) -> dict:
    """A self-contained proof of one access that `python -m audit.verify --receipt` accepts."""
    require_auditor("read")
    note_access(details={"seq": seq})
    if seq > MAX_POSITION:
        raise Problem(404, detail="No sealed event has this sequence number.")
    try:
        found = audit_query.receipt(_session(), seq)
    except audit_query.NotCheckpointedYet:
        raise Problem(
            409,
            "not-checkpointed-yet",
            detail="No signed checkpoint covers this event yet; retry shortly.",
            headers={"Retry-After": "5"},
        ) from None
    if found is None:
        raise Problem(404, detail="No sealed event has this sequence number.")
    return found


@blp.route("/checkpoints/latest", methods=["GET"])
@blp.response(200, CheckpointSchema)
@requires_scope("audit:read")
def latest_checkpoint() -> dict:
    require_auditor("read")
    checkpoint = audit_query.latest_checkpoint(_session())
    if checkpoint is None:
        raise Problem(404, detail="No checkpoint has been signed yet.")
    keys = extensions.keys()
    public = keys.checkpoint_public_keys()[keys.checkpoint_key_version]
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root_hash.hex(),
        "timestamp": checkpoint.timestamp,
        "key_name": checkpoint.key_name,
        "public_key_id": checkpoint.key_id.hex(),
        "note": checkpoint.note,
        "public_key_pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    }


@blp.route("/consistency", methods=["GET"])
@blp.arguments(ConsistencyQuery, location="query")
@blp.response(200, ConsistencySchema)
@requires_scope("audit:read")
def consistency(query: dict) -> dict:
    """Proof that the tree at `to_size` extends the tree at `from_size` (RFC 9162 s.2.1.4)."""
    require_auditor("read")
    note_access(details={"from_size": query["from_size"], "to_size": query["to_size"]})
    if query["from_size"] > query["to_size"]:
        raise Problem(422, detail="from_size must not exceed to_size.")
    try:
        proof = audit_query.consistency_proof(_session(), query["from_size"], query["to_size"])
    except ValueError as error:
        raise Problem(422, detail=str(error)) from None
    return {**query, "proof": [p.hex() for p in proof]}


@blp.route("/subjects/<string:subject>/accesses", methods=["GET"])
@blp.response(200, SubjectAccessesSchema)
@requires_scope("audit:read")
def subject_accesses(subject: str) -> dict:
    """Who has seen this person's record, under which agreement, for what purpose."""
    require_auditor("read")
    try:
        subject = str(uuid.UUID(subject))
    except ValueError:
        raise Problem(404, detail="Subjects are identified by their internal id here.") from None
    note_access(subject_ids=[subject], details={"query": "subject_accesses"})
    return {"subject": subject, "accesses": audit_query.subject_accesses(_session(), subject)}


@blp.route("/export", methods=["GET"])
@blp.arguments(ExportQuery, location="query")
@blp.response(200, content_type="application/jsonl")
@requires_scope("audit:read")
def export(query: dict) -> Response:
    """Sealed events in sequence order, streamed in constant memory; resume with `from_seq`."""
    require_auditor("export")
    note_access(details={"format": query["format"], "from_seq": query["from_seq"]})
    mimetype = "text/csv" if query["format"] == "csv" else "application/jsonl"
    return Response(
        stream_with_context(_exported(query["format"], query["from_seq"])), mimetype=mimetype
    )


def _exported(format_: str, from_seq: int) -> Iterator[str]:
    """The export's lines, read after the request's audit event was committed, on a session
    of its own and outside any transaction: each chunk's query sees what is sealed by then
    (the log only grows), and nothing is held while the client reads. In a transaction, a
    client reading slowly would hold SQLite's write lock, and every other request, which
    must write its audit event, would wait for it and fail."""
    with extensions.database().session_factory() as session:
        begin_read_phase(session)  # and never ended: it writes nothing
        lines = audit_query.export_events(session, from_seq)
        if format_ == "csv":
            yield from _csv(lines)
        else:
            for line in lines:
                text = json.dumps(line, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                yield text + "\n"


def _csv(lines: Iterator[dict]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    for line in lines:
        event = line["event"]
        flat = {
            **event,
            "seq": line["seq"],
            "leaf_hash": line["leaf_hash"],
            "subject_ids": " ".join(event.get("subject_ids", [])),
            "fields": " ".join(event.get("fields", [])),
            "event": json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
        }
        writer.writerow([flat.get(column) for column in CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
