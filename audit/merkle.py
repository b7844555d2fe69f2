"""RFC 9162 section 2.1 Merkle tree hashes, proofs and proof verification.

Why stored perfect subtrees: a log of millions of events cannot rehash its leaves to answer
a proof. Node ``(level, index)`` is the hash of leaves ``[index * 2**level,
(index + 1) * 2**level)``; once written it never changes. Every range the RFC's recursive
definitions ask for (they always split at the largest power of two below the size) is
either one such node or a right edge made of at most one node per level, so MTH, PATH and
PROOF each cost O(log n) node look-ups through a `NodeStore`.

The verifiers follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step, so that they can
be reviewed against the text. Standard library only: ``audit.verify`` imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int, bytes]
T = TypeVar("T")


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class NodeStore(Protocol):
    """Where perfect subtree hashes come from: a dict in tests, the database in the log."""

    def get(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree over leaves [index * 2**level, (index+1) * 2**level)."""
        ...


class MissingNodeError(LookupError):
    """A node a computation needs is not in the store (the tree is not that big yet)."""


class MappingNodeStore:
    """A NodeStore over a dict keyed by (level, index); level 0 holds the leaf hashes."""

    def __init__(self, nodes: Mapping[tuple[int, int], bytes] | None = None) -> None:
        self.nodes: dict[tuple[int, int], bytes] = dict(nodes or {})

    def get(self, level: int, index: int) -> bytes:
        try:
            return self.nodes[(level, index)]
        except KeyError:
            raise MissingNodeError(f"node ({level}, {index}) is not stored") from None

    def add(self, nodes: Iterable[Node]) -> None:
        for level, index, value in nodes:
            self.nodes[(level, index)] = value


class _RecordingStore:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def get(self, level: int, index: int) -> bytes:
        self.seen.append((level, index))
        return bytes(HASH_SIZE)


def nodes_needed(compute: Callable[[NodeStore], object]) -> list[tuple[int, int]]:
    """The node coordinates `compute` reads, so a database store can fetch them in one query."""
    recorder = _RecordingStore()
    compute(recorder)
    return list(dict.fromkeys(recorder.seen))


def _split(n: int) -> int:
    """The largest power of two strictly below n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(store: NodeStore, start: int, end: int) -> bytes:
    """MTH(D[start:end]) composed from stored perfect nodes."""
    size = end - start
    if size <= 0:
        if size == 0 and start == 0:
            return EMPTY_ROOT
        raise ValueError(f"empty or negative range [{start}, {end})")
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return store.get(level, start >> level)
    k = _split(size)
    return node_hash(subtree_hash(store, start, start + k), subtree_hash(store, start + k, end))


def root_hash(size: int, store: NodeStore) -> bytes:
    """MTH of the first `size` leaves; SHA-256 of the empty string for the empty tree."""
    if size < 0:
        raise ValueError("tree size cannot be negative")
    return EMPTY_ROOT if size == 0 else subtree_hash(store, 0, size)


def inclusion_path(index: int, size: int, store: NodeStore) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 section 2.1.3.1, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")

    def path(m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, start, start + k), subtree_hash(store, start + k, end)]
        return [*path(m - k, start + k, end), subtree_hash(store, start, start + k)]

    return path(index, 0, size)


def consistency_proof(size1: int, size2: int, store: NodeStore) -> list[bytes]:
    """PROOF(size1, D[size2]) of RFC 9162 section 2.1.4.1; empty when size1 is 0 or size2."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 in (0, size2):
        return []

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [subtree_hash(store, start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), subtree_hash(store, start + k, end)]
        return [*subproof(m - k, start + k, end, False), subtree_hash(store, start, start + k)]

    return subproof(size1, 0, size2, True)


def _hashes_ok(*values: bytes) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2, step by step."""
    if not _hashes_ok(leaf_hash, root, *proof):
        return False
    # 1. leaf_index must lie inside the tree.
    if not 0 <= leaf_index < tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1;  3. r = hash.
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    # 4. for each p in inclusion_path:
    for p in proof:
        if sn == 0:  # 4a. a longer proof than the tree allows
            return False
        if fn & 1 or fn == sn:  # 4b.
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c.
        sn >>= 1
    # 5. sn == 0 (the proof was not too short) and r == root.
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2, step by step, plus the guards the RFC leaves implicit.

    Sizes 0 and equal sizes are not covered by the RFC's algorithm: every tree extends the
    empty tree (whose root must still be SHA-256 of the empty string), and a tree extends
    itself only with an empty proof and identical roots.
    """
    if not _hashes_ok(root1, root2, *proof):
        return False
    if not 0 <= size1 <= size2:
        return False
    if size1 == 0:
        return not proof and root1 == EMPTY_ROOT and (size2 > 0 or root2 == EMPTY_ROOT)
    if size1 == size2:
        return not proof and root1 == root2
    # 1. an empty path proves nothing.
    if not proof:
        return False
    path = list(proof)
    # 2. if first is an exact power of 2, prepend first_hash.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = size1 - 1, size2 - 1
    # 4. if LSB(fn) is set, right-shift both until it is not.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = first value of the path.
    fr = sr = path[0]
    # 6. for each subsequent value c:
    for c in path[1:]:
        if sn == 0:  # 6a.
            return False
        if fn & 1 or fn == sn:  # 6b.
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c.
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash and sn == 0.
    return fr == root1 and sr == root2 and sn == 0


class Frontier:
    """The right edge of a tree of `size` leaves: one perfect subtree root per set bit.

    It is all that appending and computing the root need, so a sealer touches O(log n)
    stored nodes per batch and a verifier streams any export in constant memory.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError("a frontier holds exactly one hash per set bit of its size")
        self.size = size
        self._stack = list(hashes)  # highest level first

    @staticmethod
    def coords(size: int) -> list[tuple[int, int]]:
        """(level, index) of the frontier nodes of a tree of `size` leaves, highest first."""
        return [
            (level, (size >> level) - 1)
            for level in range(size.bit_length() - 1, -1, -1)
            if size >> level & 1
        ]

    @classmethod
    def from_store(cls, size: int, store: NodeStore) -> Frontier:
        return cls(size, [store.get(level, index) for level, index in cls.coords(size)])

    def append(self, leaf: bytes) -> list[Node]:
        """Add one leaf; return the perfect nodes it completes, the leaf itself first."""
        index = self.size
        new: list[Node] = [(0, index, leaf)]
        value, level = leaf, 0
        while index & 1:
            value = node_hash(self._stack.pop(), value)
            level += 1
            index >>= 1
            new.append((level, index, value))
        self._stack.append(value)
        self.size += 1
        return new

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def append_leaves(
    existing_size: int, leaf_hashes: Iterable[bytes], store: NodeStore
) -> list[Node]:
    """The perfect nodes (leaves included, about two per leaf) created by appending.

    Only the frontier of the existing tree is read from `store`.
    """
    frontier = Frontier.from_store(existing_size, store)
    out: list[Node] = []
    for leaf in leaf_hashes:
        out.extend(frontier.append(leaf))
    return out
