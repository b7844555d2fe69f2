"""Per-recipient pseudonyms: computed by `policies.pseudonyms`, indexed here so that an
inbound pseudonym resolves to its subject with one lookup, and rotated with a grace period.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit.events import EventKind
from gateway.db import (
    Database,
    begin_read_phase,
    end_read_phase,
    insert_ignoring_duplicates,
    write_after_read,
)
from gateway.keys import KeyStore
from gateway.models import PseudonymIndex, PseudonymKeyVersion
from gateway.services.registry import audit_admin
from policies.engine import PolicySet
from policies.pseudonyms import Keyring, pseudonym_domain

log = logging.getLogger("gateway")

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
    looked_up = sorted(unseen)
    for start in range(0, len(looked_up), _LOOKUP_CHUNK):  # one query for a page of a list
        chunk = looked_up[start : start + _LOOKUP_CHUNK]
        unseen -= set(
            session.connection().execute(_INDEXED_AMONG, {"pseudonyms": chunk}).scalars()
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


# Pseudonyms per index lookup: a rotation map holds every subject a recipient was given, and
# the IN list must stay well inside every driver's parameter limit.
_LOOKUP_CHUNK = 1000
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


_KEY_VERSIONS = PseudonymKeyVersion.__table__
_SUPERSEDE_OLDER = (
    sa.update(_KEY_VERSIONS)
    .where(
        _KEY_VERSIONS.c.version < sa.bindparam("current"),
        _KEY_VERSIONS.c.superseded_at.is_(None),
    )
    .values(superseded_at=sa.bindparam("now", type_=_KEY_VERSIONS.c.superseded_at.type))
)


def record_key_versions(session: Session, keys: KeyStore, now: datetime) -> bool:
    """Record the key store's pseudonymisation key versions, each older than the current one
    as superseded from `now` unless it already was.

    The grace period of a version runs from its `superseded_at`, and `keys rotate` is not the
    only way a version gets superseded: with GATEWAY_PSEUDONYM_KEYS the operator adds one and
    restarts, and nothing else would write the row, so old pseudonyms would never expire.
    Called when a process loads its keys, so a version counts as superseded from the first
    time any gateway process saw a newer one. Each write is race-safe on its own (workers
    start together): a row is inserted only if missing, and `superseded_at` is set only while
    it is NULL, so the first process to see the newer version fixes the time for good.
    Returns whether there was anything to write."""
    current = keys.pseudonym_key_version
    known = dict(
        session.execute(
            sa.select(PseudonymKeyVersion.version, PseudonymKeyVersion.superseded_at)
        ).all()
    )
    missing = [
        {"version": v, "created_at": now, "superseded_at": now if v < current else None}
        for v in sorted(keys.pseudonym_keys)
        if v not in known
    ]
    if missing:
        write_after_read(session, insert_ignoring_duplicates(session, _KEY_VERSIONS), missing)
    stale = any(v < current and at is None for v, at in known.items())
    if stale:
        write_after_read(session, _SUPERSEDE_OLDER, [{"current": current, "now": now}])
    return bool(missing) or stale


def record_key_versions_at_start(database: Database, keys: KeyStore) -> None:
    """`record_key_versions` for a starting process, in its own short write transaction,
    taken only when there is something to write (a start usually finds every row in place,
    and on SQLite the write lock would make each worker's start wait on the others).

    A start without the database (down, or not migrated yet) still starts: the gateway
    answers 503 until the database is back, and the next start records the versions."""
    session = database.session_factory()
    try:
        begin_read_phase(session)
        if record_key_versions(session, keys, datetime.now(UTC)):
            end_read_phase(session, keep_writes=True)
            session.commit()
    except SQLAlchemyError as error:
        log.error(
            "pseudonymisation key versions not recorded (%s): the grace period of a "
            "superseded version starts at the next start that records them",
            type(error).__name__,
        )
    finally:
        session.close()


def rotation_map_for(
    session: Session,
    keys: KeyStore,
    policy: PolicySet,
    agency: str,
    old_version: int,
    grace: timedelta,
    now: datetime,
) -> dict[str, str]:
    """Old-to-new map of the pseudonyms this agency was given under `old_version` that it
    could still use: the old version is within its grace period, and the agreement the
    pseudonym was given under is in force with the agency a party to it. (A pseudonym that
    no longer resolves is not translated either: that would hand out a working pseudonym
    for a person the recipient may no longer ask about.)

    The new pseudonyms are indexed like any handed out, since the recipient uses them next."""
    ring = keyring(keys)
    if old_version >= ring.current:
        return {}
    superseded_at = session.scalar(
        sa.select(PseudonymKeyVersion.superseded_at).where(
            PseudonymKeyVersion.version == old_version
        )
    )
    if superseded_at is not None and now - superseded_at > grace:
        return {}
    domains = [
        pseudonym_domain(agreement.id, agency)
        for agreement in policy.agreements
        if agency in agreement.party_codes and agreement.in_force(now.date())
    ]
    if not domains:
        return {}
    rows = session.execute(
        sa.select(PseudonymIndex.domain, PseudonymIndex.subject_id, PseudonymIndex.pseudonym)
        .where(PseudonymIndex.domain.in_(domains), PseudonymIndex.key_version == old_version)
        .order_by(PseudonymIndex.domain, PseudonymIndex.subject_id)
    ).all()
    by_domain: dict[str, dict[str, str]] = {}
    for domain, subject_id, pseudonym in rows:
        by_domain.setdefault(domain, {})[subject_id] = pseudonym
    result: dict[str, str] = {}
    for domain, old in by_domain.items():
        agreement_id = domain.rpartition("/")[0]
        new = pseudonyms_for(session, ring, agreement_id, agency, list(old))
        result.update((old[sid], new[sid]) for sid in old)
    return result
