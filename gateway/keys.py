"""The key store: the only code that touches key material.

Hands out, by purpose and version, the token-signing key (ES256, the algorithm partners'
libraries verify most widely), the checkpoint-signing key (Ed25519, as transparency-log
notes use) and the pseudonymisation master keys. Keys come from environment variables in
production or from files under the git-ignored instance folder, generated at first run with
owner-only permissions and marked as demo keys so production refuses them.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import ECKey, KeySet

DEMO_MARKER = "DEMO-KEYS-NOT-FOR-PRODUCTION"
TOKEN_ALGORITHM = "ES256"


class KeyStoreError(RuntimeError):
    """The keys are missing or unfit for the configured mode."""


@dataclass
class KeyStore:
    token_keys: dict[int, ec.EllipticCurvePrivateKey]
    checkpoint_keys: dict[int, ed25519.Ed25519PrivateKey]
    pseudonym_keys: dict[int, bytes]
    demo: bool
    directory: Path | None = None

    # --- token signing ---
    @property
    def token_key_version(self) -> int:
        return max(self.token_keys)

    def token_signing_jwk(self) -> ECKey:
        version = self.token_key_version
        return _jwk(self.token_keys[version], private=True)

    def public_jwks(self) -> KeySet:
        """Every token key still accepted, newest first, private parts stripped."""
        return KeySet(
            [_jwk(self.token_keys[v], private=False) for v in sorted(self.token_keys, reverse=True)]
        )

    # --- checkpoint signing ---
    @property
    def checkpoint_key_version(self) -> int:
        return max(self.checkpoint_keys)

    def checkpoint_signing_key(self) -> ed25519.Ed25519PrivateKey:
        return self.checkpoint_keys[self.checkpoint_key_version]

    def checkpoint_public_keys(self) -> dict[int, ed25519.Ed25519PublicKey]:
        return {v: k.public_key() for v, k in self.checkpoint_keys.items()}

    # --- pseudonymisation ---
    @property
    def pseudonym_key_version(self) -> int:
        return max(self.pseudonym_keys)

    def cursor_key(self) -> bytes:
        """The key sealing list cursors that hold internal ids (`gateway.pagination`).

        Derived from the current pseudonymisation key, so a rotation only makes a listing in
        progress start again (its cursor no longer opens: 400)."""
        return _cursor_key(self.pseudonym_keys[self.pseudonym_key_version])

    def add_pseudonym_key(self) -> int:
        """Make a new pseudonymisation key version (rotation) and persist it."""
        if self.directory is None:
            raise KeyStoreError("keys from the environment are rotated by the operator")
        version = self.pseudonym_key_version + 1
        key = os.urandom(32)
        _write_private(self.directory / f"pseudonym-v{version}.key", base64.b64encode(key))
        self.pseudonym_keys[version] = key
        return version


@functools.lru_cache(maxsize=4)  # derived once per key, not on every list request
def _cursor_key(master: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"iom-gateway list cursor"
    ).derive(master)


def _jwk(key: ec.EllipticCurvePrivateKey, *, private: bool) -> ECKey:
    material = key if private else key.public_key()
    jwk = ECKey.import_key(material, {"use": "sig", "alg": TOKEN_ALGORITHM})
    jwk = ECKey.import_key(
        material, {"use": "sig", "alg": TOKEN_ALGORITHM, "kid": jwk.thumbprint()}
    )
    return jwk


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _versions(directory: Path, stem: str, suffix: str) -> dict[int, Path]:
    pattern = re.compile(rf"^{stem}-v(\d+)\.{suffix}$")
    found = {}
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def generate_demo_keys(directory: Path) -> None:
    """First run: create one version of each key, owner-only, marked as demo keys."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    if not _versions(directory, "token-signing", "pem"):
        _write_private(
            directory / "token-signing-v1.pem", _pem(ec.generate_private_key(ec.SECP256R1()))
        )
    if not _versions(directory, "checkpoint-signing", "pem"):
        _write_private(
            directory / "checkpoint-signing-v1.pem", _pem(ed25519.Ed25519PrivateKey.generate())
        )
    if not _versions(directory, "pseudonym", "key"):
        _write_private(directory / "pseudonym-v1.key", base64.b64encode(os.urandom(32)))
    marker = directory / DEMO_MARKER
    if not marker.exists():
        marker.write_text("These keys were generated by the gateway for development use.\n")


def load_from_directory(directory: Path) -> KeyStore:
    if not directory.is_dir():
        raise KeyStoreError(f"key directory {directory} does not exist")

    def read(stem: str, suffix: str) -> dict[int, bytes]:
        found = {v: p.read_bytes() for v, p in _versions(directory, stem, suffix).items()}
        if not found:
            raise KeyStoreError(f"no {stem} key in {directory}")
        return found

    token = {
        v: serialization.load_pem_private_key(b, None)
        for v, b in read("token-signing", "pem").items()
    }
    checkpoint = {
        v: serialization.load_pem_private_key(b, None)
        for v, b in read("checkpoint-signing", "pem").items()
    }
    pseudonym = {v: base64.b64decode(b) for v, b in read("pseudonym", "key").items()}
    if not all(isinstance(k, ec.EllipticCurvePrivateKey) for k in token.values()):
        raise KeyStoreError("token-signing keys must be EC P-256 keys")
    if not all(isinstance(k, ed25519.Ed25519PrivateKey) for k in checkpoint.values()):
        raise KeyStoreError("checkpoint-signing keys must be Ed25519 keys")
    if any(len(k) < 32 for k in pseudonym.values()):
        raise KeyStoreError("pseudonymisation keys must be at least 32 bytes")
    return KeyStore(
        token_keys=token,  # type: ignore[arg-type]
        checkpoint_keys=checkpoint,  # type: ignore[arg-type]
        pseudonym_keys=pseudonym,
        demo=(directory / DEMO_MARKER).exists(),
        directory=directory,
    )


def load_from_environment() -> KeyStore | None:
    """Production keys from GATEWAY_TOKEN_SIGNING_KEY, GATEWAY_CHECKPOINT_SIGNING_KEY (PEM)
    and GATEWAY_PSEUDONYM_KEYS ("1:<base64>,2:<base64>"); None when none is set."""
    names = (
        "GATEWAY_TOKEN_SIGNING_KEY",
        "GATEWAY_CHECKPOINT_SIGNING_KEY",
        "GATEWAY_PSEUDONYM_KEYS",
    )
    present = [n for n in names if os.environ.get(n)]
    if not present:
        return None
    if len(present) != len(names):
        missing = ", ".join(n for n in names if n not in present)
        raise KeyStoreError(f"missing key environment variables: {missing}")
    token = serialization.load_pem_private_key(os.environ[names[0]].encode(), None)
    checkpoint = serialization.load_pem_private_key(os.environ[names[1]].encode(), None)
    if not isinstance(token, ec.EllipticCurvePrivateKey):
        raise KeyStoreError("GATEWAY_TOKEN_SIGNING_KEY must be an EC P-256 key")
    if not isinstance(checkpoint, ed25519.Ed25519PrivateKey):
        raise KeyStoreError("GATEWAY_CHECKPOINT_SIGNING_KEY must be an Ed25519 key")
    pseudonym = {}
    for item in os.environ[names[2]].split(","):
        version, _, value = item.partition(":")
        pseudonym[int(version)] = base64.b64decode(value)
    return KeyStore({1: token}, {1: checkpoint}, pseudonym, demo=False)


def load_keys(directory: Path, *, production: bool) -> KeyStore:
    """The key store for this process; generates demo keys only outside production."""
    keys = load_from_environment()
    if keys is None:
        if not production:
            generate_demo_keys(directory)
        keys = load_from_directory(directory)
    if production and keys.demo:
        raise KeyStoreError(f"refusing to run in production with demo keys from {directory}")
    return keys
