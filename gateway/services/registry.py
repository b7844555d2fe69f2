"""Registering agencies and their API clients, suspending and revoking them.

Each change writes its audit event into the same transaction, so administrative changes
are as accountable as data access.
"""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from joserfc.errors import InvalidKeyTypeError, JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry, Key
from joserfc.jws import JWSRegistry
from sqlalchemy.orm import Session

from audit.events import AuditEvent, EventKind
from audit.record import record_event
from gateway.credentials import hash_secret, new_client_secret
from gateway.models import AGENCY_KINDS, Agency, ApiClient
from gateway.oauth import CLIENT_ASSERTION_ALGORITHMS, SCOPES

AGENCY_CODE = re.compile(r"[A-Z][A-Z0-9-]{1,31}")
MIN_RSA_BITS = 2048  # client assertion keys: shorter RSA keys are breakable


class RegistryError(ValueError):
    """An administrative request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class IssuedClient:
    client_id: str
    client_secret: str | None
    agency: str
    scopes: tuple[str, ...]


def audit_admin(
    session: Session, kind: EventKind, *, agency: str | None, details: dict[str, Any]
) -> None:
    record_event(
        session,
        AuditEvent(
            event_id=secrets.token_hex(16),
            kind=kind,
            time=datetime.now(UTC),
            agency=agency,
            decision="permit",
            reason="admin",
            details=details,
        ),
    )


def add_agency(session: Session, code: str, name: str, kind: str, areas: list[str]) -> Agency:
    if not AGENCY_CODE.fullmatch(code):
        raise RegistryError(f"agency code {code!r} must match {AGENCY_CODE.pattern}")
    if kind not in AGENCY_KINDS:
        raise RegistryError(f"agency kind {kind!r} is not one of {', '.join(AGENCY_KINDS)}")
    if session.scalar(sa.select(Agency).where(Agency.code == code)) is not None:
        raise RegistryError(f"agency {code} already exists")
    agency = Agency(code=code, name=name, kind=kind, areas=sorted(areas))
    session.add(agency)
    audit_admin(session, EventKind.AGENCY_REGISTERED, agency=code, details={"kind": kind})
    return agency


def get_agency(session: Session, code: str) -> Agency:
    agency = session.scalar(sa.select(Agency).where(Agency.code == code))
    if agency is None:
        raise RegistryError(f"no agency {code}")
    return agency


def set_agency_suspended(session: Session, code: str, suspended: bool) -> Agency:
    """Suspension takes effect on the agency's next request, whatever tokens it holds."""
    agency = get_agency(session, code)
    agency.suspended_at = datetime.now(UTC) if suspended else None
    kind = EventKind.AGENCY_SUSPENDED if suspended else EventKind.AGENCY_REINSTATED
    audit_admin(session, kind, agency=code, details={})
    return agency


def add_client(
    session: Session,
    agency_code: str,
    name: str,
    scopes: list[str],
    *,
    jwks: dict[str, Any] | None = None,
    client_id: str | None = None,
) -> IssuedClient:
    """Register a client; returns the secret once (it is stored only as a hash)."""
    agency = get_agency(session, agency_code)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise RegistryError(f"unknown scopes: {', '.join(unknown)}")
    if jwks is not None:
        check_client_jwks(jwks)
    client_id = client_id or f"{agency_code.lower()}-{secrets.token_hex(6)}"
    secret = None if jwks else new_client_secret()
    session.add(
        ApiClient(
            client_id=client_id,
            agency=agency,
            name=name,
            auth_method="private_key_jwt" if jwks else "client_secret_basic",
            secret_hash=hash_secret(secret) if secret else None,
            jwks=jwks,
            scopes=" ".join(sorted(set(scopes))),
        )
    )
    audit_admin(
        session,
        EventKind.CLIENT_REGISTERED,
        agency=agency_code,
        details={"client_id": client_id, "scopes": sorted(set(scopes))},
    )
    return IssuedClient(client_id, secret, agency_code, tuple(sorted(set(scopes))))


def check_client_jwks(jwks: Any) -> None:
    """Refuse a JWKS the client could never authenticate with, or that leaks a private key.

    `jwks` is whatever JSON the administrator supplied. Every key must be readable (the whole
    set is imported at each client assertion, so one bad key would lock the client out; a kty
    not understood is ignored there and here), none may hold private material (the gateway
    only verifies, and a private key sent to us is compromised), and at least one must verify
    client assertions signed with an algorithm the token endpoint allows.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise RegistryError("a JWKS must be an object with a 'keys' list")
    usable = False
    for index, data in enumerate(jwks["keys"]):
        if not isinstance(data, dict):
            raise RegistryError(f"JWKS key {index} is not a JSON object")
        try:
            with warnings.catch_warnings():  # a short RSA key is refused below, in one line
                warnings.simplefilter("ignore", SecurityWarning)
                key = JWKRegistry.import_key(data)
        except InvalidKeyTypeError:
            continue  # a kty not understood is skipped, as KeySet.import_key_set does (RFC 7517)
        except (JoseError, ValueError, TypeError) as error:
            raise RegistryError(f"JWKS key {index} is not a valid JWK: {error}") from error
        if key.is_private:
            raise RegistryError(
                f"JWKS key {index} holds private or secret key material: register public keys only"
            )
        if key.key_type == "RSA" and key.raw_value.key_size < MIN_RSA_BITS:
            raise RegistryError(
                f"JWKS key {index} is a {key.raw_value.key_size}-bit RSA key: "
                f"at least {MIN_RSA_BITS} bits (NCSC guidance)"
            )
        if any(_verifies(key, alg) for alg in CLIENT_ASSERTION_ALGORITHMS):
            usable = True
    if not usable:
        raise RegistryError(
            "the JWKS has no public key that verifies client assertions signed with "
            + ", ".join(CLIENT_ASSERTION_ALGORITHMS)
        )


def _verifies(key: Key, alg: str) -> bool:
    """Whether the key may verify `alg` signatures (its kty, crv, use, alg and key_ops)."""
    try:
        JWSRegistry.algorithms[alg].check_key(key)
        key.check_key_op("verify")
    except JoseError:
        return False
    return True


def revoke_client(session: Session, client_id: str) -> ApiClient:
    client = session.scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None:
        raise RegistryError(f"no client {client_id}")
    client.revoked_at = client.revoked_at or datetime.now(UTC)
    audit_admin(
        session,
        EventKind.CLIENT_REVOKED,
        agency=client.agency.code,
        details={"client_id": client_id},
    )
    return client
