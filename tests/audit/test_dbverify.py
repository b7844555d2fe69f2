"""verify_database: every kind of tampering with the tables is found and located.

On PostgreSQL the edits bypass the append-only triggers the way a superuser could
(``session_replication_role = replica``): the tree must catch what the triggers cannot.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.checkpoint import sign_checkpoint
from audit.dbverify import verify_database
from audit.events import canonical_json
from audit.models import (
    AuditCheckpoint,
    AuditEventRow,
    AuditEventSubject,
    AuditLeaf,
    AuditNode,
)
from audit.record import event_row
from tests.audit.helpers import (
    KEY_NAME,
    ORIGIN,
    OTHER_KEY,
    PUBLIC_KEY,
    T0,
    make_event,
    record_many,
    seal_all,
)

SIZE = 21


@pytest.fixture
def sealed(audit_session: Session) -> Session:
    record_many(audit_session, 13)
    seal_all(audit_session)
    record_many(audit_session, SIZE - 13, start=13)
    seal_all(audit_session, T0 + timedelta(minutes=1))
    record_many(audit_session, 2, start=SIZE)  # unsealed, still checked
    assert verify_database(audit_session, PUBLIC_KEY, KEY_NAME).ok
    if audit_session.get_bind().dialect.name == "postgresql":
        audit_session.execute(sa.text("SET LOCAL session_replication_role = replica"))
    return audit_session


def row_id_of(session: Session, seq: int) -> int:
    return session.execute(sa.select(AuditLeaf.event_row_id).where(AuditLeaf.seq == seq)).scalar()


def body_of(session: Session, seq: int) -> dict:
    row_id = row_id_of(session, seq)
    return json.loads(session.execute(sa.select(AuditEventRow.body)
                                      .where(AuditEventRow.id == row_id)).scalar())


def set_body(session: Session, seq: int, body: dict) -> None:
    session.execute(sa.update(AuditEventRow).where(AuditEventRow.id == row_id_of(session, seq))
                    .values(body=canonical_json(body).decode()))


def check(session: Session, seq: int | None, text: str) -> None:
    report = verify_database(session, PUBLIC_KEY, KEY_NAME)
    assert not report.ok
    assert report.first_bad_seq == seq, report.problems
    assert any(text in p for p in report.problems), report.problems


def test_clean_log(sealed: Session) -> None:
    report = verify_database(sealed, PUBLIC_KEY, KEY_NAME, chunk_size=4)
    assert report.ok, report.problems
    assert (report.tree_size, report.events_checked, report.checkpoints_checked) == (SIZE, SIZE, 2)


def test_edited_body(sealed: Session) -> None:
    body = body_of(sealed, 7)
    body["purpose"] = "curiosity"
    set_body(sealed, 7, body)
    check(sealed, 7, "seq 7: leaf hash does not match event")


def test_edited_query_column(sealed: Session) -> None:
    sealed.execute(sa.update(AuditEventRow).where(AuditEventRow.id == row_id_of(sealed, 3))
                   .values(agency="MI5"))
    check(sealed, 3, "seq 3: column agency does not match the event body")


def test_removed_subject_row(sealed: Session) -> None:
    sealed.execute(sa.delete(AuditEventSubject)
                   .where(AuditEventSubject.event_row_id == row_id_of(sealed, 11)))
    check(sealed, 11, "seq 11: subject rows do not match")


def test_deleted_event_leaf(sealed: Session) -> None:
    sealed.execute(sa.delete(AuditLeaf).where(AuditLeaf.seq == 9))
    check(sealed, 9, "seq 9 missing")


def test_deleted_event_row(sealed: Session) -> None:
    row_id = row_id_of(sealed, 4)
    sealed.execute(sa.delete(AuditEventSubject).where(AuditEventSubject.event_row_id == row_id))
    sealed.execute(sa.delete(AuditEventRow).where(AuditEventRow.id == row_id))
    check(sealed, 4, "seq 4: its event row is missing")


def test_swapped_events(sealed: Session) -> None:
    a, b = body_of(sealed, 5), body_of(sealed, 6)
    set_body(sealed, 5, b)
    set_body(sealed, 6, a)
    check(sealed, 5, "seq 5: leaf hash does not match event")


def test_rewritten_leaf_and_nodes_still_break_the_signed_root(sealed: Session) -> None:
    """Someone edits a body and recomputes its leaf hash: the nodes and roots disagree."""
    body = body_of(sealed, 2)
    body["status"] = 404
    set_body(sealed, 2, body)
    from audit.events import leaf_hash

    sealed.execute(sa.update(AuditLeaf).where(AuditLeaf.seq == 2)
                   .values(leaf_hash=leaf_hash(canonical_json(body))))
    check(sealed, 2, "seqs 2..3: stored node (1, 1) does not match the leaves")


def test_edited_node(sealed: Session) -> None:
    sealed.execute(sa.update(AuditNode).where(AuditNode.level == 2, AuditNode.node_index == 3)
                   .values(hash=bytes(32)))
    check(sealed, 12, "seqs 12..15: stored node (2, 3) does not match the leaves")


def test_truncated_tail(sealed: Session) -> None:
    sealed.execute(sa.delete(AuditLeaf).where(AuditLeaf.seq >= SIZE - 2))
    sealed.execute(sa.delete(AuditNode).where(AuditNode.level == 1, AuditNode.node_index == 9))
    check(sealed, SIZE - 2, f"checkpoint at size {SIZE} is beyond the tree")


def test_forged_checkpoint(sealed: Session) -> None:
    row = sealed.get(AuditCheckpoint, SIZE)
    forged = sign_checkpoint(OTHER_KEY, KEY_NAME, ORIGIN, SIZE, row.root_hash, row.timestamp)
    sealed.execute(sa.update(AuditCheckpoint).where(AuditCheckpoint.tree_size == SIZE)
                   .values(note=forged.note, key_id=forged.key_id.hex()))
    check(sealed, None, f"checkpoint at size {SIZE}: wrong key id")


def test_edited_checkpoint_root(sealed: Session) -> None:
    row = sealed.get(AuditCheckpoint, 13)
    lines = row.note.split("\n")
    lines[2] = "A" + lines[2][1:] if lines[2][0] != "A" else "B" + lines[2][1:]
    sealed.execute(sa.update(AuditCheckpoint).where(AuditCheckpoint.tree_size == 13)
                   .values(note="\n".join(lines), root_hash=bytes(32)))
    check(sealed, None, "checkpoint at size 13: signature by key")


def test_event_skipped_by_the_sealer(sealed: Session) -> None:
    sealed.execute(sa.insert(AuditEventRow).values(id=-5, **event_row(make_event(77))))
    check(sealed, None, "event row -5 is below the seal cursor but was never sealed")


def test_everything_rewritten_but_the_signature(sealed: Session) -> None:
    """Body, leaf and every node rewritten consistently: only the signed root notices,
    and the last good checkpoint bounds where."""
    from audit.events import leaf_hash
    from audit.merkle import MappingNodeStore, append_leaves

    body = body_of(sealed, 15)
    body["agency"] = "NACRO"
    set_body(sealed, 15, body)
    sealed.execute(sa.update(AuditLeaf).where(AuditLeaf.seq == 15)
                   .values(leaf_hash=leaf_hash(canonical_json(body))))
    hashes = sealed.execute(sa.select(AuditLeaf.leaf_hash).order_by(AuditLeaf.seq)).scalars()
    store = MappingNodeStore()
    for level, index, value in append_leaves(0, list(hashes), store):
        if level:
            sealed.execute(sa.update(AuditNode).values(hash=value).where(
                AuditNode.level == level, AuditNode.node_index == index))
    check(sealed, 13, f"root at size {SIZE} does not match checkpoint: leaves and nodes "
                      f"were rewritten consistently somewhere in seqs 13..{SIZE - 1}")


def test_non_canonical_body(sealed: Session) -> None:
    row_id = row_id_of(sealed, 8)
    sealed.execute(sa.update(AuditEventRow).where(AuditEventRow.id == row_id)
                   .values(body=json.dumps(body_of(sealed, 8))))  # same data, other bytes
    check(sealed, 8, "seq 8: stored body is not a canonical event")
