"""Sealing: ordering committed events into the Merkle tree and signing checkpoints.

Why a separate step: requests only INSERT their event (cheap, no global lock); one sealer
at a time decides the order. On PostgreSQL, concurrent transactions commit their ids out
of order, so an id missing below a committed one may still be in flight. The sealer waits
at such a gap for `gap_grace_seconds`, then skips it (it was probably rolled back) but
remembers it in ``audit_gaps``; if the event commits later it is sealed then, at the end
of the tree. Skipped gaps are forgotten after `gap_expiry_seconds`; ``audit.dbverify``
reports any event that was never sealed.

One call seals at most `batch_size` events in the caller's transaction; the caller commits
and calls again at once while ``SealResult.more_pending`` is true.

Checkpoint timestamps have one-second resolution and must strictly increase, so at most
one checkpoint is signed per wall-clock second; otherwise a busy log would push its
timestamps ahead of the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit.checkpoint import Checkpoint, CheckpointSigner, sign_checkpoint
from audit.events import leaf_hash
from audit.merkle import Frontier
from audit.models import (
    AuditCheckpoint,
    AuditEventRow,
    AuditGap,
    AuditLeaf,
    AuditNode,
    AuditSealState,
)
from audit.store import insert_rows, load_nodes

_events = AuditEventRow.__table__
_gaps = AuditGap.__table__


@dataclass(frozen=True)
class SealResult:
    """What one call did: `sealed` leaves appended (`late_sealed` of them late commits),
    gap ids given up on, the id it stopped at while waiting, and the checkpoint it signed.
    """

    sealed: int
    tree_size: int
    late_sealed: int = 0
    skipped_gaps: tuple[int, ...] = ()
    waiting_for: int | None = None
    more_pending: bool = False
    checkpoint: Checkpoint | None = None


def lock_seal_state(session: Session) -> AuditSealState:
    """Lock (creating if needed) the single state row, so one sealer runs at a time."""
    if session.get_bind().dialect.name == "sqlite":
        # SQLite ignores FOR UPDATE; a write takes the database write lock before we read.
        table = AuditSealState.__table__
        session.connection().execute(
            table.update().where(table.c.id == 1).values(id=table.c.id)
        )
    query = sa.select(AuditSealState).where(AuditSealState.id == 1).with_for_update()
    state = session.execute(query).scalar_one_or_none()
    if state is None:
        try:
            with session.begin_nested():
                session.add(AuditSealState(id=1, event_cursor=0, tree_size=0,
                                           last_checkpoint_size=0))
        except IntegrityError:  # another sealer created it first
            pass
        state = session.execute(query.execution_options(populate_existing=True)).scalar_one()
    return state


def seal_pending_events(
    session: Session,
    signer: CheckpointSigner,
    *,
    origin: str,
    now: datetime,
    batch_size: int = 10_000,
    checkpoint_every_events: int = 1000,
    checkpoint_every_seconds: float = 5.0,
    gap_grace_seconds: float = 2.0,
    gap_expiry_seconds: float = 3600.0,
) -> SealResult:
    """Seal up to `batch_size` committed events and sign a checkpoint if one is due.

    Does not commit: the caller commits the leaves, nodes, checkpoint and state together.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    state = lock_seal_state(session)
    conn = session.connection()
    cursor = state.event_cursor
    conn.execute(_gaps.delete().where(
        _gaps.c.event_row_id <= cursor,
        _gaps.c.first_seen < now - timedelta(seconds=gap_expiry_seconds),
    ))
    late = conn.execute(
        sa.select(_events.c.id, _events.c.body)
        .join(_gaps, _gaps.c.event_row_id == _events.c.id)
        .where(_gaps.c.event_row_id <= cursor)
        .order_by(_events.c.id).limit(batch_size)
    ).all()
    room = batch_size - len(late)
    fresh = conn.execute(
        sa.select(_events.c.id, _events.c.body).where(_events.c.id > cursor)
        .order_by(_events.c.id).limit(room)
    ).all() if room > 0 else []
    waiting = dict(conn.execute(
        sa.select(_gaps.c.event_row_id, _gaps.c.first_seen).where(_gaps.c.event_row_id > cursor)
    ).all())
    taken, skipped, stopped_at, walked_to = _walk(
        conn, fresh, cursor, waiting, now, gap_grace_seconds, batch_size
    )
    # Past every event taken and every gap given up on (those stay in audit_gaps, sealed late
    # if they ever commit), even when no event was taken: a run of rolled-back ids longer
    # than a batch must not hold the cursor where it is.
    state.event_cursor = walked_to
    rows = [*late, *taken]
    root = None
    if rows:
        root = _append(session, state, rows)
        was_gap = [r[0] for r in late] + [r[0] for r in taken if r[0] in waiting]
        if was_gap:
            conn.execute(_gaps.delete().where(_gaps.c.event_row_id.in_(was_gap)))
    checkpoint = _maybe_checkpoint(session, state, signer, origin, now, root,
                                   checkpoint_every_events, checkpoint_every_seconds)
    session.flush()
    return SealResult(
        sealed=len(rows), tree_size=state.tree_size, late_sealed=len(late),
        skipped_gaps=tuple(skipped), waiting_for=stopped_at,
        more_pending=stopped_at is None and (len(late) + len(fresh) >= batch_size),
        checkpoint=checkpoint,
    )


def _walk(
    conn: sa.Connection, fresh: list[sa.Row], cursor: int, waiting: dict[int, datetime],
    now: datetime, grace: float, max_new_gaps: int,
) -> tuple[list[sa.Row], list[int], int | None, int]:
    """Take events in id order up to the first missing id that is still within its grace.

    Returns the events taken, the gaps given up on, the id it stopped at (None if it did not)
    and the last id it walked past. At most `max_new_gaps` missing ids are first seen per
    call; the walk stops at the first one beyond them and records more on the next call."""
    new: list[int] = []
    expected = cursor + 1
    for row in fresh:
        for gap in range(expected, row[0]):
            if gap in waiting:
                continue
            if len(new) == max_new_gaps:
                break
            new.append(gap)
        expected = row[0] + 1
    if new:
        conn.execute(sa.insert(_gaps), [{"event_row_id": i, "first_seen": now} for i in new])
        waiting.update((i, now) for i in new)
    taken: list[sa.Row] = []
    skipped: list[int] = []
    expected = cursor + 1
    for row in fresh:
        for gap in range(expected, row[0]):
            first_seen = waiting.get(gap)
            if first_seen is None or (now - first_seen).total_seconds() <= grace:
                return taken, skipped, gap, gap - 1
            skipped.append(gap)
        taken.append(row)
        expected = row[0] + 1
    return taken, skipped, None, expected - 1


def _append(session: Session, state: AuditSealState, rows: list[sa.Row]) -> bytes:
    """Give the rows consecutive seqs, store leaves and completed nodes; return the root."""
    frontier = _frontier(session, state.tree_size)
    leaves = []
    nodes = []
    for row_id, body in rows:
        value = leaf_hash(body.encode("utf-8"))
        leaves.append({"seq": frontier.size, "event_row_id": row_id, "leaf_hash": value})
        for level, index, node in frontier.append(value)[1:]:
            nodes.append({"level": level, "node_index": index, "hash": node})
    conn = session.connection()
    insert_rows(conn, AuditLeaf.__table__, leaves)
    insert_rows(conn, AuditNode.__table__, nodes)
    state.tree_size = frontier.size
    return frontier.root()


def _maybe_checkpoint(
    session: Session, state: AuditSealState, signer: CheckpointSigner, origin: str,
    now: datetime, root: bytes | None, every_events: int, every_seconds: float,
) -> Checkpoint | None:
    pending = state.tree_size - state.last_checkpoint_size
    if pending <= 0:
        return None
    last_at = state.last_checkpoint_at
    if last_at is not None:
        if int(now.timestamp()) == int(last_at.timestamp()):
            return None  # at most one per second: timestamps have to increase
        elapsed = (now - last_at).total_seconds()
        if pending < every_events and 0 <= elapsed < every_seconds:
            return None
    if root is None:
        root = _frontier(session, state.tree_size).root()
    timestamp = int(now.timestamp())
    if state.last_checkpoint_timestamp is not None:
        timestamp = max(timestamp, state.last_checkpoint_timestamp + 1)
    checkpoint = sign_checkpoint(signer.private_key, signer.key_name, origin,
                                 state.tree_size, root, timestamp)
    session.connection().execute(sa.insert(AuditCheckpoint.__table__), {
        "tree_size": checkpoint.tree_size, "timestamp": timestamp, "root_hash": root,
        "key_name": signer.key_name, "key_id": checkpoint.key_id.hex(),
        "note": checkpoint.note,
    })
    state.last_checkpoint_size = state.tree_size
    state.last_checkpoint_timestamp = timestamp
    state.last_checkpoint_at = now
    return checkpoint


def _frontier(session: Session, size: int) -> Frontier:
    return Frontier.from_store(size, load_nodes(session, Frontier.coords(size)))
