"""Client secrets: shown once, stored only as an scrypt hash, compared in constant time."""

from __future__ import annotations

import base64
import secrets

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

_N, _R, _P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = Scrypt(salt=salt, length=32, n=_N, r=_R, p=_P).derive(secret.encode())
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    kdf = Scrypt(salt=_unb64(salt), length=32, n=int(n), r=int(r), p=int(p))
    try:
        kdf.verify(secret.encode(), _unb64(digest))  # constant-time comparison
    except InvalidKey:
        return False
    return True
