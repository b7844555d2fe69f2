"""Sealing: ordering, gaps and late commits, nodes, and checkpoint policy."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit import query
from audit.checkpoint import verify_checkpoint
from audit.dbverify import verify_database
from audit.events import leaf_hash
from audit.merkle import verify_consistency
from audit.models import (
    AuditCheckpoint,
    AuditEventRow,
    AuditEventSubject,
    AuditGap,
    AuditLeaf,
    AuditNode,
)
from audit.record import event_row, record_event
from tests.audit.helpers import (
    KEY_NAME,
    PUBLIC_KEY,
    T0,
    NaiveTree,
    make_event,
    record_many,
    seal,
    seal_all,
)
from tests.databases import backends


def leaves(session: Session) -> list[tuple[int, int, bytes]]:
    return [tuple(r) for r in session.execute(
        sa.select(AuditLeaf.seq, AuditLeaf.event_row_id, AuditLeaf.leaf_hash)
        .order_by(AuditLeaf.seq))]


def insert_with_id(session: Session, row_id: int, i: int) -> None:
    """Simulate an id handed out by the sequence (commit order differs from id order)."""
    event = make_event(i)
    session.execute(sa.insert(AuditEventRow).values(id=row_id, **event_row(event)))
    session.execute(sa.insert(AuditEventSubject),
                    [{"event_row_id": row_id, "subject_id": s} for s in event.subject_ids])


def test_seals_in_id_order_with_consecutive_seqs(audit_session: Session) -> None:
    record_many(audit_session, 25)
    result = seal(audit_session)
    assert (result.sealed, result.tree_size, result.more_pending) == (25, 25, False)
    rows = leaves(audit_session)
    assert [r[0] for r in rows] == list(range(25))
    ids = [r[1] for r in rows]
    assert ids == sorted(ids)
    bodies = dict(audit_session.execute(sa.select(AuditEventRow.id, AuditEventRow.body)).all())
    assert all(value == leaf_hash(bodies[row_id].encode()) for _, row_id, value in rows)
    # Stored nodes are exactly the perfect subtrees of the naive tree.
    naive = NaiveTree([r[2] for r in rows])
    nodes = audit_session.execute(sa.select(AuditNode.level, AuditNode.node_index,
                                            AuditNode.hash)).all()
    assert len(nodes) == 25 - (25).bit_count()
    for level, index, value in nodes:
        assert value == naive.mth(index << level, (index + 1) << level)
    checkpoint = result.checkpoint
    assert checkpoint is not None and checkpoint.root_hash == naive.mth(0, 25)
    assert verify_checkpoint(checkpoint.note, PUBLIC_KEY, KEY_NAME).tree_size == 25
    assert seal(audit_session, T0 + timedelta(seconds=60)).sealed == 0


def test_batches_and_more_pending(audit_session: Session) -> None:
    record_many(audit_session, 23)
    sizes = []
    now = T0
    while True:
        result = seal(audit_session, now, batch_size=10)
        sizes.append(result.sealed)
        now += timedelta(seconds=1)
        if not result.more_pending:
            break
    assert sizes[:3] == [10, 10, 3] and sum(sizes) == 23


def test_checkpoint_policy(audit_session: Session) -> None:
    now = T0
    record_many(audit_session, 3)
    first = seal(audit_session, now, checkpoint_every_events=5, checkpoint_every_seconds=10)
    assert first.checkpoint is not None  # the very first leaves get a checkpoint at once
    record_many(audit_session, 3, start=3)
    # Neither enough events nor enough time.
    assert seal(audit_session, now + timedelta(seconds=2), checkpoint_every_events=5,
                checkpoint_every_seconds=10).checkpoint is None
    # Enough time has passed.
    by_time = seal(audit_session, now + timedelta(seconds=11), checkpoint_every_events=5,
                   checkpoint_every_seconds=10).checkpoint
    assert by_time is not None and by_time.tree_size == 6
    # Time passes but the tree did not grow: no checkpoint, never two for one size.
    assert seal(audit_session, now + timedelta(seconds=60)).checkpoint is None
    record_many(audit_session, 5, start=6)
    # Enough events, but within the same second as the last one: deferred.
    same_second = now + timedelta(seconds=11, milliseconds=500)
    assert seal(audit_session, same_second, checkpoint_every_events=5,
                checkpoint_every_seconds=10).checkpoint is None
    by_count = seal(audit_session, now + timedelta(seconds=12), checkpoint_every_events=5,
                    checkpoint_every_seconds=10).checkpoint
    assert by_count is not None and by_count.tree_size == 11
    # The clock went backwards: the timestamp still increases.
    record_many(audit_session, 1, start=11)
    behind = seal(audit_session, now - timedelta(hours=1)).checkpoint
    assert behind is not None and behind.timestamp == by_count.timestamp + 1
    checkpoints = audit_session.execute(
        sa.select(AuditCheckpoint.tree_size, AuditCheckpoint.timestamp)
        .order_by(AuditCheckpoint.tree_size)).all()
    assert [c[0] for c in checkpoints] == [3, 6, 11, 12]
    stamps = [c[1] for c in checkpoints]
    assert stamps == sorted(set(stamps))
    # Each checkpoint is consistent with the one before it.
    notes = [query.checkpoint_at(audit_session, size) for size, _ in checkpoints]
    for old, new in itertools.pairwise(notes):
        proof = query.consistency_proof(audit_session, old.tree_size, new.tree_size)
        assert verify_consistency(old.tree_size, new.tree_size, old.root_hash,
                                  new.root_hash, proof)


def test_waits_at_a_gap_then_skips_it_and_seals_it_when_it_commits_late(
    audit_session: Session,
) -> None:
    for row_id in (1, 2, 4, 5):
        insert_with_id(audit_session, row_id, row_id)
    first = seal(audit_session, T0, gap_grace_seconds=2)
    assert (first.sealed, first.waiting_for) == (2, 3)
    gaps = audit_session.execute(sa.select(AuditGap.event_row_id, AuditGap.first_seen)).all()
    assert gaps == [(3, T0)]
    # Still within the grace period: nothing more.
    assert seal(audit_session, T0 + timedelta(seconds=1), gap_grace_seconds=2).sealed == 0
    skipped = seal(audit_session, T0 + timedelta(seconds=3), gap_grace_seconds=2)
    assert (skipped.sealed, skipped.skipped_gaps, skipped.waiting_for) == (2, (3,), None)
    assert [r[1] for r in leaves(audit_session)] == [1, 2, 4, 5]
    # Id 3 commits late (a long transaction): it is sealed at the end of the tree.
    insert_with_id(audit_session, 3, 3)
    insert_with_id(audit_session, 6, 6)
    late = seal(audit_session, T0 + timedelta(seconds=4))
    assert (late.sealed, late.late_sealed) == (2, 1)
    assert [r[1] for r in leaves(audit_session)] == [1, 2, 4, 5, 3, 6]
    assert audit_session.execute(sa.select(AuditGap)).all() == []
    assert verify_database(audit_session, PUBLIC_KEY, KEY_NAME).ok


def test_a_run_of_missing_ids_longer_than_a_batch_is_walked_past(
    audit_session: Session,
) -> None:
    """Ids 3-13 were rolled back (say, requests refused while the database was failing): more
    missing ids than one call records. Each call records the next batch of them and gives up
    on the ones past their grace, so sealing moves on instead of stalling for good."""
    for row_id in (1, 2, 14):
        insert_with_id(audit_session, row_id, row_id)
    results = [
        seal(audit_session, T0 + timedelta(seconds=3 * i), gap_grace_seconds=2, batch_size=5)
        for i in range(4)
    ]
    assert [r.waiting_for for r in results] == [3, 8, 13, None]
    assert [len(r.skipped_gaps) for r in results] == [0, 5, 5, 1]
    assert [r[1] for r in leaves(audit_session)] == [1, 2, 14]
    assert sorted(audit_session.execute(sa.select(AuditGap.event_row_id)).scalars()) == list(
        range(3, 14)
    )  # remembered, in case one commits late
    insert_with_id(audit_session, 9, 9)
    late = seal(audit_session, T0 + timedelta(seconds=13), gap_grace_seconds=2)
    assert (late.sealed, late.late_sealed) == (1, 1)
    assert verify_database(audit_session, PUBLIC_KEY, KEY_NAME).ok


def test_gap_that_commits_within_grace_keeps_id_order(audit_session: Session) -> None:
    for row_id in (1, 3):
        insert_with_id(audit_session, row_id, row_id)
    assert seal(audit_session, T0).waiting_for == 2
    insert_with_id(audit_session, 2, 2)
    assert seal(audit_session, T0 + timedelta(seconds=1)).sealed == 2
    assert [r[1] for r in leaves(audit_session)] == [1, 2, 3]
    assert audit_session.execute(sa.select(AuditGap)).all() == []


def test_rolled_back_gaps_are_forgotten_after_expiry(audit_session: Session) -> None:
    for row_id in (1, 3):
        insert_with_id(audit_session, row_id, row_id)
    seal(audit_session, T0)
    seal(audit_session, T0 + timedelta(seconds=5))
    assert audit_session.execute(sa.select(AuditGap.event_row_id)).scalars().all() == [2]
    seal(audit_session, T0 + timedelta(hours=2), gap_expiry_seconds=3600)
    assert audit_session.execute(sa.select(AuditGap)).all() == []
    assert verify_database(audit_session, PUBLIC_KEY, KEY_NAME).ok


@pytest.mark.parametrize("fresh_database", backends(), indirect=True)
def test_concurrent_writers_and_sealers(fresh_database: sa.Engine) -> None:
    """Real commits from several threads while two sealers compete; the log stays sound."""
    engine = fresh_database
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        try:
            for i in range(40):
                with Session(engine) as session:
                    record_event(session, make_event(offset + i))
                    if i % 7 == 3:
                        session.rollback()  # a failed request leaves a gap on PostgreSQL
                    else:
                        session.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def sealer() -> None:
        now = T0
        try:
            while not stop.is_set():
                with Session(engine) as session:
                    seal(session, now, gap_grace_seconds=0.5, batch_size=17)
                    session.commit()
                now += timedelta(milliseconds=300)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    sealers = [threading.Thread(target=sealer) for _ in range(2)]
    for thread in writers + sealers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in sealers:
        thread.join()
    assert not errors, errors
    with Session(engine) as session:
        seal_all(session, T0 + timedelta(hours=1))
        session.commit()
        committed = session.execute(sa.select(sa.func.count()).select_from(AuditEventRow))
        assert committed.scalar() == 4 * (40 - 6)
        assert len(leaves(session)) == 4 * (40 - 6)
        report = verify_database(session, PUBLIC_KEY, KEY_NAME)
        assert report.ok, report.problems
