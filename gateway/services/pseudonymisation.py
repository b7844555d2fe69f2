"""Per-recipient pseudonyms: computed by `policies.pseudonyms`, indexed here so that an
inbound pseudonym resolves to its subject with one lookup, and rotated with a grace period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.events import EventKind
from gateway.db import insert_ignoring_duplicates, write_after_read
from gateway.keys import KeyStore
from gateway.models import PseudonymIndex, PseudonymKeyVersion
from gateway.services.registry import audit_admin
from policies.pseudonyms import Keyring, pseudonym_domain, rotation_map

PREFIX = "psn"
# Pseudonyms this request resolved from the index: known to be there without looking.
RESOLVED = "gateway_resolved_pseudonyms"


_keyrings: dict[tuple[int, ...], Keyring] = {}


def keyring(keys: KeyStore) -> Keyring:
    """The keyring for the key store's current versions, reused so derived keys stay cached."""
    stamp = (keys.pseudonym_key_version, *sorted(keys.pseudonym_keys), id(keys))
    ring = _keyrings.get(stamp)
    if ring is None:
        ring = _keyrings[stamp] = Keyring(
            versions=keys.pseudonym_keys, current=keys.pseudonym_key_version
        )
    return ring


def pseudonyms_for(
    session: Session, ring: Keyring, agreement_id: str, agency: str, subject_ids: list[str]
) -> dict[str, str]:
    """The recipient's pseudonym for each subject, recorded in the index for inbound lookups.

    Only new ones are written: a pseudonym is derived afresh on every disclosure, but once
    indexed it stays, and a write (with its transaction, and on SQLite the write lock) costs a
    read request more than looking first."""
    domain = pseudonym_domain(agreement_id, agency)
    found = {sid: ring.pseudonym(domain, sid) for sid in subject_ids}
    unseen = set(found.values()) - session.info.get(RESOLVED, set())
    if unseen:
        unseen -= set(
            session.connection().execute(_INDEXED_AMONG, {"pseudonyms": list(unseen)}).scalars()
        )
    if unseen:
        rows = [
            {"pseudonym": p, "domain": domain, "key_version": ring.current, "subject_id": sid}
            for sid, p in found.items()
            if p in unseen
        ]
        write_after_read(
            session, insert_ignoring_duplicates(session, PseudonymIndex.__table__), rows
        )
    return found


_INDEXED_AMONG = sa.select(PseudonymIndex.pseudonym).where(
    PseudonymIndex.pseudonym.in_(sa.bindparam("pseudonyms", expanding=True))
)


# One statement: the index entry with its key version's standing.
_RESOLUTION = (
    sa.select(PseudonymIndex.subject_id, PseudonymIndex.domain, PseudonymKeyVersion.superseded_at)
    .outerjoin(PseudonymKeyVersion, PseudonymKeyVersion.version == PseudonymIndex.key_version)
    .where(PseudonymIndex.pseudonym == sa.bindparam("pseudonym"))
)


def resolve_pseudonym(
    session: Session, pseudonym: str, agency: str, grace: timedelta, now: datetime
) -> tuple[str, str] | None:
    """(subject id, agreement id) for a pseudonym this agency was given, else None.

    A pseudonym of a superseded key version still resolves until the grace period ends.
    """
    row = session.connection().execute(_RESOLUTION, {"pseudonym": pseudonym}).first()
    if row is None:
        return None
    subject_id, domain, superseded_at = row
    agreement_id, _, recipient = domain.rpartition("/")
    if recipient != agency:
        return None
    if superseded_at is not None and now - superseded_at > grace:
        return None
    session.info.setdefault(RESOLVED, set()).add(pseudonym)
    return subject_id, agreement_id


def rotate_pseudonym_key(session: Session, keys: KeyStore) -> int:
    """Make a new key version current; the old one resolves for the grace period."""
    now = datetime.now(UTC)
    old = keys.pseudonym_key_version
    for version in keys.pseudonym_keys:
        if session.get(PseudonymKeyVersion, version) is None:
            session.add(PseudonymKeyVersion(version=version, created_at=now))
    session.flush()
    new = keys.add_pseudonym_key()
    session.get(PseudonymKeyVersion, old).superseded_at = now
    session.add(PseudonymKeyVersion(version=new, created_at=now))
    audit_admin(
        session,
        EventKind.KEY_ROTATED,
        agency=None,
        details={"purpose": "pseudonym", "version": new},
    )
    return new


def rotation_map_for(
    session: Session, keys: KeyStore, agency: str, old_version: int
) -> dict[str, str]:
    """Old-to-new map of the pseudonyms this agency was given under `old_version`."""
    ring = keyring(keys)
    if old_version not in ring.versions or old_version == ring.current:
        return {}
    rows = session.execute(
        sa.select(PseudonymIndex.domain, PseudonymIndex.subject_id).where(
            PseudonymIndex.domain.like(f"%/{agency}"), PseudonymIndex.key_version == old_version
        )
    ).all()
    result: dict[str, str] = {}
    by_domain: dict[str, list[str]] = {}
    for domain, subject_id in rows:
        by_domain.setdefault(domain, []).append(subject_id)
    for domain, subject_ids in by_domain.items():
        result.update(rotation_map(ring, old_version, ring.current, domain, subject_ids))
    return result
