"""Test helpers: event factories, a signer, sealing shortcuts and a naive Merkle tree."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from audit.checkpoint import CheckpointSigner
from audit.events import AuditEvent, EventKind
from audit.record import record_event
from audit.seal import SealResult, seal_pending_events

ORIGIN = "iom-gateway.test/audit"
KEY_NAME = "iom-gateway.test/audit"
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
SUBJECTS = [str(uuid.UUID(int=i + 1)) for i in range(20)]

_PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"audit test key").digest())
SIGNER = CheckpointSigner(KEY_NAME, _PRIVATE_KEY)
PUBLIC_KEY = _PRIVATE_KEY.public_key()
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"someone else").digest())


def make_event(i: int = 0, **overrides: object) -> AuditEvent:
    values: dict[str, object] = {
        "event_id": uuid.UUID(int=10_000 + i).hex,
        "kind": EventKind.API_ACCESS,
        "time": T0 + timedelta(seconds=i),
        "decision": "permit",
        "request_id": f"req-{i}",
        "client_id": f"client-{i % 3}",
        "agency": ["WMP", "PROBATION", "NACRO"][i % 3],
        "purpose": ["iom-case-management", "safeguarding"][i % 2],
        "method": "GET",
        "route": "/api/v1/subjects/<uuid:subject_id>",
        "action": "read",
        "resource_type": "subject",
        "subject_ids": (SUBJECTS[i % len(SUBJECTS)],),
        "agreement": "core-iom@3",
        "grant": "read-core",
        "disclosure_level": "full",
        "fields": ("date_of_birth", "name"),
        "reason": "ok",
        "status": 200,
        "duration_us": 1500 + i,
        "details": {"page_size": 50},
    }
    values.update(overrides)
    return AuditEvent(**values)  # type: ignore[arg-type]


def record_many(session: Session, count: int, start: int = 0) -> list[AuditEvent]:
    events = [make_event(i) for i in range(start, start + count)]
    for event in events:
        record_event(session, event)
    return events


def seal(session: Session, now: datetime | None = None, **options: object) -> SealResult:
    return seal_pending_events(session, SIGNER, origin=ORIGIN, now=now or T0, **options)


def seal_all(session: Session, now: datetime | None = None, **options: object) -> SealResult:
    """Seal until nothing is pending, skipping gaps; ends with a checkpoint over everything."""
    now = now or T0
    while True:
        result = seal(session, now, checkpoint_every_events=1, **options)
        now += timedelta(seconds=3)  # past the default gap grace
        if not result.more_pending and result.waiting_for is None:
            return result


# --- an independent, naive RFC 9162 implementation (full recomputation) -------------------

def naive_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


class NaiveTree:
    """MTH, PATH and PROOF exactly as RFC 9162 section 2.1 defines them, over a leaf list."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.leaves = leaf_hashes
        self.mth = lru_cache(maxsize=None)(self._mth)

    def _mth(self, a: int, b: int) -> bytes:
        n = b - a
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[a]
        k = 1
        while k * 2 < n:
            k *= 2
        return hashlib.sha256(b"\x01" + self.mth(a, a + k) + self.mth(a + k, b)).digest()

    def path(self, m: int, a: int, b: int) -> list[bytes]:
        n = b - a
        if n == 1:
            return []
        k = 1
        while k * 2 < n:
            k *= 2
        if m < k:
            return [*self.path(m, a, a + k), self.mth(a + k, b)]
        return [*self.path(m - k, a + k, b), self.mth(a, a + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        return self._subproof(m, 0, n, True)

    def _subproof(self, m: int, a: int, b: int, complete: bool) -> list[bytes]:
        n = b - a
        if m == n:
            return [] if complete else [self.mth(a, b)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*self._subproof(m, a, a + k, complete), self.mth(a + k, b)]
        return [*self._subproof(m - k, a + k, b, False), self.mth(a, a + k)]
