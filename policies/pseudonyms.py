"""Per-recipient pseudonyms: stable for one recipient, unlinkable across recipients.

A pseudonym is HMAC-SHA-256 of the subject's internal id under a key derived (HKDF-SHA-256)
from the master key of one version, with the derivation bound to the domain
"<agreement id>/<recipient agency>" and the key version. Two recipients therefore hold
pseudonyms made under unrelated keys: comparing their lists reveals nothing without the master
key, and a leaked domain key exposes one recipient's domain only.

Format: "psn<version>_" + 26 lower-case base32 characters (128 bits of the MAC). The version in
the prefix tells the gateway which key made an inbound pseudonym during a rotation.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from types import MappingProxyType

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "psn"
_DIGEST_BYTES = 16  # 128 bits: collisions stay negligible at any plausible caseload
_MIN_MASTER_KEY = 32
_PATTERN = re.compile(rf"{PREFIX}([1-9][0-9]*)_([a-z2-7]{{26}})")


def pseudonym_domain(agreement_id: str, agency: str) -> str:
    """The domain a recipient's pseudonyms live in; "/" separates, so neither part may hold one."""
    if not agreement_id or not agency or "/" in agreement_id or "/" in agency:
        raise ValueError("agreement id and agency must be non-empty and contain no '/'")
    return f"{agreement_id}/{agency}"


def derive_domain_key(key: bytes, key_version: int, domain: str) -> bytes:
    """The per-domain HMAC key; HKDF info binds the purpose, the version and the domain."""
    if len(key) < _MIN_MASTER_KEY:
        raise ValueError(f"pseudonymisation master key must be at least {_MIN_MASTER_KEY} bytes")
    if key_version < 1:
        raise ValueError("key version must be 1 or more")
    info = b"iom-gateway pseudonym\x00%d\x00" % key_version + domain.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def pseudonym_with_domain_key(domain_key: bytes, key_version: int, subject_id: str) -> str:
    mac = hmac.HMAC(domain_key, hashes.SHA256())
    mac.update(subject_id.encode("utf-8"))
    body = base64.b32encode(mac.finalize()[:_DIGEST_BYTES]).decode("ascii").rstrip("=").lower()
    return f"{PREFIX}{key_version}_{body}"


def pseudonym_for(key: bytes, key_version: int, domain: str, subject_id: str) -> str:
    """The pseudonym of `subject_id` in `domain` under master key `key` of `key_version`."""
    domain_key = derive_domain_key(key, key_version, domain)
    return pseudonym_with_domain_key(domain_key, key_version, subject_id)


def pseudonym_version(pseudonym: str) -> int | None:
    """The key version a pseudonym was made with, or None if it is not one of ours."""
    match = _PATTERN.fullmatch(pseudonym)
    return int(match.group(1)) if match else None


class Keyring:
    """Master keys by version, with domain keys cached so a page of records derives once.

    The cache holds derived keys only for this process's lifetime; it may be dropped at any time.
    """

    def __init__(self, versions: Mapping[int, bytes], current: int) -> None:
        if current not in versions:
            raise ValueError(f"current key version {current} is not in the keyring")
        for version, key in versions.items():
            derive_domain_key(key, version, "check")  # refuse short keys and bad versions now
        self._versions = MappingProxyType(dict(versions))
        self.current = current
        self._domain_keys: dict[tuple[int, str], bytes] = {}

    def __repr__(self) -> str:
        return f"Keyring(versions={sorted(self._versions)}, current={self.current})"

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._versions))

    def domain_key(self, version: int, domain: str) -> bytes:
        cached = self._domain_keys.get((version, domain))
        if cached is None:
            if version not in self._versions:
                raise KeyError(f"no pseudonymisation key of version {version}")
            cached = derive_domain_key(self._versions[version], version, domain)
            self._domain_keys[version, domain] = cached
        return cached

    def pseudonym(self, domain: str, subject_id: str, version: int | None = None) -> str:
        """The pseudonym under `version`, by default the current key."""
        version = self.current if version is None else version
        return pseudonym_with_domain_key(self.domain_key(version, domain), version, subject_id)

