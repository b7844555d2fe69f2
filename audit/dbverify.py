"""Verifying the audit tables in place, from the bodies up.

Why recompute everything: the stored leaves, nodes and checkpoints could have been edited
together by someone with database access. This recomputes every leaf from the stored
canonical body, rebuilds the tree, compares every stored node and checkpoint root, checks
each checkpoint signature against the given public key, and checks that the query columns
and subject rows still say what the bodies say. Two streaming passes in chunks keep memory
constant at millions of events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from audit.checkpoint import CheckpointError, key_id, verify_checkpoint
from audit.events import CanonicalFormError, event_from_canonical, leaf_hash
from audit.merkle import Frontier
from audit.models import (
    AuditCheckpoint,
    AuditEventRow,
    AuditEventSubject,
    AuditGap,
    AuditLeaf,
    AuditNode,
    AuditSealState,
)

E, L, N, C, S = AuditEventRow, AuditLeaf, AuditNode, AuditCheckpoint, AuditEventSubject


@dataclass
class VerifyReport:
    """Outcome of `verify_database`.

    `first_bad_seq` is the earliest seq known to be affected. A stored node that disagrees
    with the leaves below it locates its first leaf; a signed root that disagrees with
    leaves and nodes that agree with each other (everything rewritten but the signature)
    is located by the previous good checkpoint: the change lies at or after its size.
    Checkpoint signature problems locate no seq.
    """

    tree_size: int = 0
    events_checked: int = 0
    checkpoints_checked: int = 0
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    _bad_ranges: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, message: str, seq: int | None = None, end: int | None = None) -> None:
        self.problems.append(message)
        if seq is not None:
            self._bad_ranges.append((seq, end if end is not None else seq + 1))
            if self.first_bad_seq is None or seq < self.first_bad_seq:
                self.first_bad_seq = seq

    def explains(self, start: int, end: int) -> bool:
        """Whether a problem already reported lies in leaves [start, end)."""
        return any(a < end and start < b for a, b in self._bad_ranges)


def verify_database(
    session: Session, public_key: Ed25519PublicKey, key_name: str | None = None,
    *, older_keys: Sequence[Ed25519PublicKey] = (), chunk_size: int = 10_000,
    max_problems: int = 50,
) -> VerifyReport:
    """Check the whole log; `first_bad_seq` locates the earliest tampered leaf.

    `older_keys`: the log's earlier checkpoint keys. Each checkpoint is checked against the
    key its row names, so a log signed by one key and then another verifies."""
    report = VerifyReport()
    keys = (public_key, *older_keys)
    _check_tree(session, keys, key_name, chunk_size, report, max_problems)
    if len(report.problems) < max_problems:
        _check_rows(session, chunk_size, report, max_problems)
    return report


def _leaf_chunks(session: Session, chunk_size: int) -> Iterator[list[sa.Row]]:
    after = -1
    while True:
        rows = session.execute(
            sa.select(L.seq, L.leaf_hash, E.body).outerjoin(E, E.id == L.event_row_id)
            .where(L.seq > after).order_by(L.seq).limit(chunk_size)
        ).all()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _checkpoints(session: Session, chunk_size: int) -> Iterator[sa.Row]:
    table = C.__table__
    after = -1
    while True:
        rows = session.execute(
            sa.select(table).where(table.c.tree_size > after).order_by(table.c.tree_size)
            .limit(chunk_size)
        ).all()
        yield from rows
        if len(rows) < chunk_size:
            return
        after = rows[-1].tree_size


def _check_tree(
    session: Session, keys: Sequence[Ed25519PublicKey], key_name: str | None, chunk_size: int,
    report: VerifyReport, max_problems: int,
) -> None:
    """Rebuild the tree from the bodies, comparing leaves, nodes and signed roots."""
    frontier = Frontier()
    checkpoints = _checkpoints(session, chunk_size)
    pending = next(checkpoints, None)
    roots_to_judge: list[tuple[int, int]] = []  # (size, previous good size)
    last = {"timestamp": -1, "good_size": 0}

    def check_checkpoints() -> None:
        nonlocal pending
        while pending is not None and pending.tree_size <= frontier.size:
            if pending.tree_size == frontier.size:
                _check_checkpoint(pending, frontier.root(), keys, key_name, last,
                                  roots_to_judge, report)
            pending = next(checkpoints, None)

    check_checkpoints()
    for rows in _leaf_chunks(session, chunk_size):
        built: dict[int, dict[int, bytes]] = defaultdict(dict)
        for seq, stored, body in rows:
            if seq != frontier.size:
                report.problem(f"seq {frontier.size} missing (next stored leaf is {seq})",
                               frontier.size)
                return
            value = _recompute_leaf(seq, body, report)
            if value is not None and value != stored:
                report.problem(f"seq {seq}: leaf hash does not match event", seq)
            for level, index, node in frontier.append(value or stored)[1:]:
                built[level][index] = node
            report.events_checked += 1
            check_checkpoints()
        _compare_nodes(session, built, report)
        if len(report.problems) >= max_problems:
            return
    for size, good in roots_to_judge:
        if report.explains(0, size):
            report.problem(f"root at size {size} does not match checkpoint "
                           "(explained by the problems above)")
        else:
            report.problem(f"root at size {size} does not match checkpoint: leaves and "
                           f"nodes were rewritten consistently somewhere in seqs "
                           f"{good}..{size - 1}", good, size)
    report.tree_size = frontier.size
    _check_totals(session, frontier.size, pending, report)


def _recompute_leaf(seq: int, body: str | None, report: VerifyReport) -> bytes | None:
    """The leaf hash of the stored body (whether the body is canonical is checked with the
    columns, so each body is decoded once)."""
    if body is None:
        report.problem(f"seq {seq}: its event row is missing", seq)
        return None
    return leaf_hash(body.encode("utf-8"))


def _check_checkpoint(
    row: sa.Row, root: bytes, keys: Sequence[Ed25519PublicKey], key_name: str | None,
    last: dict[str, int], roots_to_judge: list[tuple[int, int]], report: VerifyReport,
) -> None:
    size = row.tree_size
    report.checkpoints_checked += 1
    try:
        checkpoint = verify_checkpoint(row.note, _named_key(row, keys), key_name)
    except CheckpointError as exc:
        report.problem(f"checkpoint at size {size}: {exc}")
        return
    if checkpoint.root_hash != root:
        roots_to_judge.append((size, last["good_size"]))
    else:
        last["good_size"] = size
    stored = (row.tree_size, row.root_hash, row.timestamp, row.key_id)
    signed = (checkpoint.tree_size, checkpoint.root_hash, checkpoint.timestamp,
              checkpoint.key_id.hex())
    if stored != signed:
        report.problem(f"checkpoint at size {size}: columns differ from the signed note")
    timestamp = checkpoint.timestamp if checkpoint.timestamp is not None else -1
    if timestamp <= last["timestamp"]:
        report.problem(f"checkpoint at size {size}: timestamp does not increase")
    last["timestamp"] = timestamp


def _named_key(row: sa.Row, keys: Sequence[Ed25519PublicKey]) -> Ed25519PublicKey:
    """The key the checkpoint row names by its id; the current one when none is known (the
    signature check then says what is wrong). A row edited to name another key gains
    nothing: the note must still carry a good signature by that key."""
    for key in keys:
        if key_id(row.key_name, key).hex() == row.key_id:
            return key
    return keys[0]


def _compare_nodes(session: Session, built: dict[int, dict[int, bytes]],
                   report: VerifyReport) -> None:
    """Report the lowest stored nodes that disagree; nodes above a reported one are
    explained by it and left out."""
    for level, nodes in sorted(built.items()):
        stored = dict(session.execute(
            sa.select(N.node_index, N.hash).where(
                N.level == level, N.node_index.between(min(nodes), max(nodes)))
        ).all())
        for index in sorted(nodes):
            start, end = index << level, (index + 1) << level
            if stored.get(index) == nodes[index] or report.explains(start, end):
                continue
            state = "is missing" if index not in stored else "does not match the leaves"
            report.problem(f"seqs {start}..{end - 1}: stored node ({level}, {index}) {state}",
                           start, end)


def _check_totals(session: Session, size: int, pending: sa.Row | None,
                  report: VerifyReport) -> None:
    if pending is not None:
        report.problem(f"seq {size} missing: checkpoint at size {pending.tree_size} is "
                       f"beyond the tree ({size} leaves)", size)
    stored_nodes = session.execute(sa.select(sa.func.count()).select_from(N)).scalar_one()
    if stored_nodes != size - size.bit_count():
        report.problem(f"{stored_nodes} stored nodes, a tree of {size} leaves has "
                       f"{size - size.bit_count()}")
    state = session.execute(sa.select(AuditSealState)).scalar_one_or_none()
    if state is not None and state.tree_size != size:
        report.problem(f"seal state says {state.tree_size} leaves, the table holds {size}")


def _check_rows(session: Session, chunk_size: int, report: VerifyReport,
                max_problems: int) -> None:
    """Query columns and subject rows against the bodies; events left unsealed."""
    cursor = session.execute(sa.select(AuditSealState.event_cursor)).scalar() or 0
    gaps = set(session.execute(sa.select(AuditGap.event_row_id)).scalars())
    events = E.__table__
    after: int | None = None
    while len(report.problems) < max_problems:
        page = sa.select(events, L.seq).outerjoin(L, L.event_row_id == events.c.id)
        if after is not None:
            page = page.where(events.c.id > after)
        rows = session.execute(page.order_by(events.c.id).limit(chunk_size)).all()
        if not rows:
            return
        subjects: dict[int, list[str]] = defaultdict(list)
        for row_id, subject in session.execute(
            sa.select(S.event_row_id, S.subject_id)
            .where(S.event_row_id.between(rows[0].id, rows[-1].id))
        ):
            subjects[row_id].append(subject)
        for row in rows:
            seq = row.seq
            where = f"seq {seq}" if seq is not None else f"unsealed event row {row.id}"
            _compare_columns(row, sorted(subjects.get(row.id, [])), where, seq, report)
            if seq is None and row.id <= cursor and row.id not in gaps:
                report.problem(f"event row {row.id} is below the seal cursor but was "
                               "never sealed")
        after = rows[-1].id


def _compare_columns(row: sa.Row, subjects: list[str], where: str, seq: int | None,
                     report: VerifyReport) -> None:
    try:
        body: dict[str, Any] = json.loads(row.body)
        event = event_from_canonical(row.body.encode("utf-8"))
    except (ValueError, CanonicalFormError) as exc:
        report.problem(f"{where}: stored body is not a canonical event ({exc})", seq)
        return
    expected = {
        "event_id": event.event_id, "kind": str(event.kind), "time": event.time,
        **{name: body[name] for name in ("agency", "client_id", "purpose", "decision",
                                         "agreement", "action", "resource_type", "status")},
    }
    for name, value in expected.items():
        if getattr(row, name) != value:
            report.problem(f"{where}: column {name} does not match the event body", seq)
    if subjects != list(event.subject_ids):
        report.problem(f"{where}: subject rows do not match the event body", seq)
