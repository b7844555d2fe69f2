"""Stored tree nodes as a `NodeStore`, fetched in bulk, and stored in bulk (`insert_rows`).

Why two passes: the merkle functions ask for nodes one at a time, but a database should
be asked once. `compute` first runs a function against a recording store to learn which
nodes it reads, fetches those in one query, then runs it for real.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
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


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows with the same keys. On PostgreSQL as one statement that unnests a
    column array each: executemany sends the server a message per row, which cost the sealer
    twice the time per row. SQLite, in-process, takes the executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(table), rows)
        return
    columns = tuple(rows[0])
    conn.execute(
        _unnesting_insert(table, columns), {name: [row[name] for row in rows] for name in columns}
    )


@functools.cache
def _unnesting_insert(table: sa.Table, columns: tuple[str, ...]) -> sa.Insert:
    arrays = (
        sa.func.unnest(sa.bindparam(name, type_=postgresql.ARRAY(table.c[name].type)))
        for name in columns
    )
    return sa.insert(table).from_select(columns, sa.select(*arrays))
