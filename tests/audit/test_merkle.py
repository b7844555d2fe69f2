"""RFC 9162 hashing, proofs and verifiers against hand-derived vectors and a naive tree."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MappingNodeStore,
    MissingNodeError,
    append_leaves,
    consistency_proof,
    inclusion_path,
    nodes_needed,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.audit.helpers import NaiveTree, naive_leaf

MAX_SIZE = 300


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# The eight-leaf tree of the certificate-transparency test data (RFC 6962 implementations).
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def build(leaf_hashes: list[bytes]) -> MappingNodeStore:
    store = MappingNodeStore()
    store.add(append_leaves(0, leaf_hashes, store))
    return store


@pytest.fixture(scope="module")
def big() -> tuple[list[bytes], MappingNodeStore, NaiveTree]:
    leaves = [naive_leaf(i.to_bytes(4, "big")) for i in range(MAX_SIZE)]
    return leaves, build(leaves), NaiveTree(leaves)


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert sha(b"") == EMPTY_ROOT
    assert root_hash(0, MappingNodeStore()).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert Frontier().root() == EMPTY_ROOT


def test_tiny_trees_by_hand() -> None:
    a, b, c = (sha(b"\x00" + x) for x in (b"a", b"b", b"c"))
    store = build([a, b, c])
    assert root_hash(1, store) == a
    assert root_hash(2, store) == sha(b"\x01" + a + b)
    # Three leaves split at 2: MTH = H(1 || H(1 || a || b) || c)
    assert root_hash(3, store) == sha(b"\x01" + sha(b"\x01" + a + b) + c)
    assert inclusion_path(2, 3, store) == [sha(b"\x01" + a + b)]
    assert inclusion_path(0, 3, store) == [b, c]
    assert consistency_proof(2, 3, store) == [c]
    assert consistency_proof(1, 3, store) == [b, c]


def test_certificate_transparency_vectors() -> None:
    store = build([sha(b"\x00" + x) for x in CT_LEAVES])
    assert [root_hash(n, store).hex() for n in range(1, 9)] == CT_ROOTS
    assert [p.hex() for p in inclusion_path(0, 8, store)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in consistency_proof(6, 8, store)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [p.hex() for p in consistency_proof(2, 5, store)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]


def test_append_creates_about_two_nodes_per_leaf_and_matches_batches(big) -> None:
    leaves, store, naive = big
    assert len(store.nodes) == 2 * MAX_SIZE - MAX_SIZE.bit_count()
    # Appending in uneven batches, reading only the frontier, gives the same nodes.
    batched = MappingNodeStore()
    size = 0
    for step in (1, 2, 5, 13, 64, 7, 100, 108):
        batched.add(append_leaves(size, leaves[size:size + step], batched))
        size += step
    assert batched.nodes == store.nodes
    assert all(root_hash(n, store) == naive.mth(0, n) for n in range(MAX_SIZE + 1))


def test_proofs_read_logarithmically_many_nodes() -> None:
    for m, n in [(0, 300), (299, 300), (150, 257), (7, 256)]:
        assert len(nodes_needed(lambda s, m=m, n=n: inclusion_path(m, n, s))) <= 2 * 9
        assert len(nodes_needed(lambda s, m=m, n=n: consistency_proof(m, n, s))) <= 2 * 9


def test_every_pair_up_to_300_against_the_naive_tree(big) -> None:
    """Exhaustive: every (m, n) inclusion and consistency pair with n <= 300 (~2 s)."""
    leaves, store, naive = big
    for n in range(MAX_SIZE + 1):
        root = naive.mth(0, n)
        for m in range(n):
            proof = inclusion_path(m, n, store)
            assert proof == naive.path(m, 0, n)
            assert verify_inclusion(m, n, leaves[m], proof, root)
        for m in range(n + 1):
            proof = consistency_proof(m, n, store)
            assert proof == (naive.proof(m, n) if 0 < m < n else [])
            assert verify_consistency(m, n, naive.mth(0, m), root, proof)


sizes = st.integers(min_value=0, max_value=MAX_SIZE)


@settings(max_examples=400, deadline=None)
@given(n=st.integers(min_value=1, max_value=MAX_SIZE), data=st.data())
def test_inclusion_matches_naive(big, n: int, data: st.DataObject) -> None:
    leaves, store, naive = big
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = inclusion_path(m, n, store)
    assert proof == naive.path(m, 0, n)
    root = naive.mth(0, n)
    assert verify_inclusion(m, n, leaves[m], proof, root)
    for number, bad in enumerate(_inclusion_forgeries(m, n, leaves[m], proof, root)):
        assert not verify_inclusion(*bad), (number, bad[:2])


@settings(max_examples=400, deadline=None)
@given(n=sizes, data=st.data())
def test_consistency_matches_naive(big, n: int, data: st.DataObject) -> None:
    _, store, naive = big
    m = data.draw(st.integers(min_value=0, max_value=n))
    proof = consistency_proof(m, n, store)
    if 0 < m < n:
        assert proof == naive.proof(m, n)
    else:
        assert proof == []
    root1, root2 = naive.mth(0, m), naive.mth(0, n)
    assert verify_consistency(m, n, root1, root2, proof)
    for number, bad in enumerate(_consistency_forgeries(m, n, root1, root2, proof)):
        assert not verify_consistency(*bad), (number, bad[:2])


def _flip(value: bytes, bit: int = 0) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


def _inclusion_forgeries(m: int, n: int, leaf: bytes, proof: list[bytes], root: bytes):
    yield m, n, _flip(leaf), proof, root
    yield m, n, leaf, proof, _flip(root)
    yield m, n, leaf, [*proof, root], root  # extended
    yield n, n, leaf, proof, root  # index == size
    yield n + 5, n, leaf, proof, root
    yield -1, n, leaf, proof, root
    if proof:
        yield m, n, leaf, proof[:-1], root  # truncated
        yield m, n, leaf, [_flip(proof[0], 3), *proof[1:]], root
        yield m, n, leaf, [*proof[:-1], _flip(proof[-1], 7)], root
        yield m, n, leaf, [*proof[:-1], proof[-1][:31]], root  # short hash
    if n > 1:
        yield (m + 1) % n, n, leaf, proof, root  # wrong index
        yield n - 1 - m, n, leaf, proof, root if m != n - 1 - m else _flip(root)


def _consistency_forgeries(m: int, n: int, root1: bytes, root2: bytes, proof: list[bytes]):
    yield m, n, _flip(root1), root2, proof
    if m > 0 or n == 0:  # every tree extends the empty tree, whatever its root
        yield m, n, root1, _flip(root2), proof
    yield m, n, root1, root2, [*proof, root1]  # extended
    if proof:
        yield m, n, root1, root2, proof[:-1]  # truncated
        yield m, n, root1, root2, [_flip(proof[0], 5), *proof[1:]]
        yield m, n, root1, root2, [*proof[:-1], _flip(proof[-1], 2)]
    if m != n:
        yield n, m, root2, root1, proof  # swapped sizes
    if 0 < m < n:
        yield m, n, root1, root2, []
        yield m, n, root2, root1, proof  # swapped roots


def test_verifier_guards() -> None:
    leaf = sha(b"x")
    assert verify_inclusion(0, 1, leaf, [], leaf)
    assert not verify_inclusion(0, 0, leaf, [], leaf)  # empty tree holds nothing
    assert not verify_inclusion(1, 1, leaf, [], leaf)
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, leaf, [])
    assert not verify_consistency(0, 5, leaf, leaf, [])  # a size-0 root is fixed
    assert not verify_consistency(0, 5, EMPTY_ROOT, leaf, [leaf])
    assert verify_consistency(3, 3, leaf, leaf, [])
    assert not verify_consistency(3, 3, leaf, _flip(leaf), [])
    assert not verify_consistency(3, 3, leaf, leaf, [leaf])
    assert not verify_consistency(4, 3, leaf, leaf, [leaf])
    assert not verify_consistency(-1, 3, leaf, leaf, [leaf])


def test_generation_refuses_impossible_requests(big) -> None:
    _, store, _ = big
    with pytest.raises(ValueError):
        inclusion_path(5, 5, store)
    with pytest.raises(ValueError):
        consistency_proof(6, 5, store)
    with pytest.raises(MissingNodeError):
        root_hash(MAX_SIZE + 1, store)
    with pytest.raises(ValueError):
        Frontier(3, [b"x" * 32])
