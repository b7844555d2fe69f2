"""Read side of the audit log: listings, proofs, receipts and exports.

Why plain dicts: the gateway serialises these straight to JSON, and an auditor's tooling
reads the same shapes from exports. Every event dict is the decoded canonical body plus
``row_id`` (the listing cursor) and ``seq`` (its leaf index, or None while unsealed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit import merkle
from audit.checkpoint import Checkpoint, parse_checkpoint
from audit.models import (
    AuditCheckpoint,
    AuditEventRow,
    AuditEventSubject,
    AuditLeaf,
    AuditSealState,
)
from audit.store import compute

RECEIPT_FORMAT = "iom-audit-receipt/1"
E, L, S = AuditEventRow, AuditLeaf, AuditEventSubject


class NotCheckpointedYet(LookupError):
    """The event is sealed but no signed checkpoint covers it yet; retry in a few seconds."""


@dataclass(frozen=True)
class EventFilters:
    """Filters for `list_events`; `time_from` is inclusive, `time_to` exclusive."""

    time_from: datetime | None = None
    time_to: datetime | None = None
    agency: str | None = None
    client_id: str | None = None
    subject_id: str | None = None
    purpose: str | None = None
    decision: str | None = None
    agreement: str | None = None
    action: str | None = None
    kind: str | None = None

    @classmethod
    def of(cls, value: EventFilters | Mapping[str, Any] | None) -> EventFilters:
        if value is None or isinstance(value, EventFilters):
            return value or cls()
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown audit filters: {sorted(unknown)}")
        return cls(**value)


def _event_dict(row_id: int, seq: int | None, body: str) -> dict[str, Any]:
    return {"row_id": row_id, "seq": seq, **json.loads(body)}


def list_events(
    session: Session,
    filters: EventFilters | Mapping[str, Any] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Sealed and unsealed events in row-id order; pass the last ``row_id`` as `after_id`.

    The cursor is the row id, not the seq, because unsealed events have no seq yet and
    seq order differs from id order for late commits.
    """
    f = EventFilters.of(filters)
    query = sa.select(E.id, L.seq, E.body).outerjoin(L, L.event_row_id == E.id)
    if f.subject_id is not None:
        query = query.join(S, sa.and_(S.event_row_id == E.id, S.subject_id == f.subject_id))
    conditions = [
        getattr(E, name) == getattr(f, name)
        for name in ("agency", "client_id", "purpose", "decision", "agreement", "action", "kind")
        if getattr(f, name) is not None
    ]
    if f.time_from is not None:
        conditions.append(E.time >= f.time_from)
    if f.time_to is not None:
        conditions.append(E.time < f.time_to)
    if after_id is not None:
        conditions.append(E.id > after_id)
    query = query.where(*conditions).order_by(E.id).limit(limit)
    return [_event_dict(*row) for row in session.execute(query)]


def get_event(session: Session, seq: int) -> dict[str, Any] | None:
    """A sealed event by leaf index, with its stored ``leaf_hash`` (hex); None if absent."""
    row = session.execute(
        sa.select(E.id, L.seq, E.body, L.leaf_hash).join(L, L.event_row_id == E.id)
        .where(L.seq == seq)
    ).first()
    if row is None:
        return None
    return {**_event_dict(row[0], row[1], row[2]), "leaf_hash": row[3].hex()}


def sealed_size(session: Session) -> int:
    """The number of sealed events (the current tree size)."""
    size = session.execute(sa.select(AuditSealState.tree_size)).scalar()
    return size or 0


def inclusion_proof(session: Session, seq: int, tree_size: int) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf `seq` in the tree of size `tree_size`."""
    _check_size(session, tree_size)
    return compute(session, lambda store: merkle.inclusion_path(seq, tree_size, store))


def consistency_proof(session: Session, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 consistency proof that the tree of `size2` extends the tree of `size1`."""
    _check_size(session, size2)
    return compute(session, lambda store: merkle.consistency_proof(size1, size2, store))


def _check_size(session: Session, size: int) -> None:
    current = sealed_size(session)
    if size > current:
        raise ValueError(f"tree size {size} is beyond the sealed tree ({current} leaves)")


def latest_checkpoint(session: Session) -> Checkpoint | None:
    """The checkpoint of the largest tree; None before the first events are sealed."""
    note = session.execute(
        sa.select(AuditCheckpoint.note).order_by(AuditCheckpoint.tree_size.desc()).limit(1)
    ).scalar()
    return None if note is None else parse_checkpoint(note)


def checkpoint_at(session: Session, size: int) -> Checkpoint | None:
    """The checkpoint signed at exactly this tree size, if one was."""
    row = session.get(AuditCheckpoint, size)
    return None if row is None else parse_checkpoint(row.note)


def receipt(session: Session, seq: int) -> dict[str, Any] | None:
    """Everything ``audit.verify --receipt`` needs, besides the public key, for one event.

    None if no event has this seq; `NotCheckpointedYet` if it is sealed but not yet
    covered by a checkpoint.
    """
    event = get_event(session, seq)
    if event is None:
        return None
    checkpoint = latest_checkpoint(session)
    if checkpoint is None or checkpoint.tree_size <= seq:
        raise NotCheckpointedYet(f"seq {seq} is not yet covered by a signed checkpoint")
    proof = inclusion_proof(session, seq, checkpoint.tree_size)
    leaf = event.pop("leaf_hash")
    event.pop("row_id")
    event.pop("seq")
    return {
        "format": RECEIPT_FORMAT,
        "seq": seq,
        "event": event,
        "leaf_hash": leaf,
        "tree_size": checkpoint.tree_size,
        "inclusion_proof": [p.hex() for p in proof],
        "checkpoint": checkpoint.note,
        "key_name": checkpoint.key_name,
        "public_key_id": checkpoint.key_id.hex(),
    }


def subject_accesses_query(subject_id: str, *, include_denied: bool = False) -> sa.Select:
    """One GROUP BY driven by the (subject_id, event_row_id) index."""
    query = (
        sa.select(E.agency, E.purpose, E.agreement, sa.func.min(E.time), sa.func.max(E.time),
                  sa.func.count())
        .select_from(S).join(E, E.id == S.event_row_id)
        .where(S.subject_id == subject_id)
        .group_by(E.agency, E.purpose, E.agreement)
        .order_by(sa.func.max(E.time).desc(), E.agency, E.purpose, E.agreement)
    )
    return query if include_denied else query.where(E.decision == "permit")


def subject_accesses(
    session: Session, subject_id: str, *, include_denied: bool = False
) -> list[dict[str, Any]]:
    """Who accessed a subject: one row per (agency, purpose, agreement), most recent first.

    Denied attempts are not accesses and are left out unless asked for.
    """
    rows = session.execute(subject_accesses_query(subject_id, include_denied=include_denied))
    return [
        {"agency": agency, "purpose": purpose, "agreement": agreement,
         "first_access": first, "last_access": last, "count": count}
        for agency, purpose, agreement, first, last, count in rows
    ]


def export_events(
    session: Session, from_seq: int = 0, to_seq: int | None = None, chunk_size: int = 5000
) -> Iterator[dict[str, Any]]:
    """Sealed events in seq order, [from_seq, to_seq), in constant memory.

    Each item is one export line: ``{"seq", "leaf_hash" (hex), "event"}``.
    """
    next_seq = from_seq
    while True:
        query = (sa.select(L.seq, L.leaf_hash, E.body).join(E, E.id == L.event_row_id)
                 .where(L.seq >= next_seq).order_by(L.seq).limit(chunk_size))
        if to_seq is not None:
            query = query.where(L.seq < to_seq)
        rows = session.execute(query).all()
        for seq, value, body in rows:
            yield {"seq": seq, "leaf_hash": value.hex(), "event": json.loads(body)}
        if len(rows) < chunk_size:
            return
        next_seq = rows[-1][0] + 1


def write_export(
    session: Session, out: TextIO, from_seq: int = 0, to_seq: int | None = None
) -> int:
    """Write `export_events` as JSON lines (the ``--events`` input of audit.verify)."""
    count = 0
    for line in export_events(session, from_seq, to_seq):
        out.write(json.dumps(line, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count
