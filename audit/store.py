"""Stored tree nodes as a `NodeStore`, fetched in bulk.

Why two passes: the merkle functions ask for nodes one at a time, but a database should
be asked once. `compute` first runs a function against a recording store to learn which
nodes it reads, fetches those in one query, then runs it for real.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.merkle import MappingNodeStore, NodeStore, nodes_needed
from audit.models import AuditLeaf, AuditNode

T = TypeVar("T")


def load_nodes(session: Session, coords: Iterable[tuple[int, int]]) -> MappingNodeStore:
    """Fetch the given (level, index) nodes; level 0 comes from the leaves table."""
    wanted: dict[int, list[int]] = defaultdict(list)
    for level, index in coords:
        wanted[level].append(index)
    store = MappingNodeStore()
    if wanted.get(0):
        rows = session.execute(
            sa.select(AuditLeaf.seq, AuditLeaf.leaf_hash).where(AuditLeaf.seq.in_(wanted[0]))
        )
        store.add((0, seq, value) for seq, value in rows)
    clauses = [
        sa.and_(AuditNode.level == level, AuditNode.node_index.in_(indexes))
        for level, indexes in wanted.items()
        if level > 0
    ]
    if clauses:
        rows = session.execute(
            sa.select(AuditNode.level, AuditNode.node_index, AuditNode.hash).where(
                sa.or_(*clauses)
            )
        )
        store.add((level, index, value) for level, index, value in rows)
    return store


def compute(session: Session, fn: Callable[[NodeStore], T]) -> T:
    """Run a merkle computation over stored nodes with one round trip for the nodes."""
    return fn(load_nodes(session, nodes_needed(fn)))
