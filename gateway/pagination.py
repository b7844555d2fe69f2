"""Opaque cursors: keyset pagination written once, for every list and feed."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from gateway.problems import Problem

MAX_POSITION = 2**63 - 1  # BIGINT
BAD_CURSOR = "The cursor is not one this list issued."


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(_raw(position)).decode().rstrip("=")


def seal_cursor(position: dict[str, Any], key: bytes) -> str:
    """`encode_cursor`, encrypted and authenticated (Fernet): for a position that is an
    internal id the caller must not learn, such as the last subject of a pseudonymised page
    (its cursor would give the id behind the pseudonym beside it)."""
    return _fernet(key).encrypt(_raw(position)).decode().rstrip("=")


def open_cursor(cursor: str | None, key: bytes, *keys: str) -> dict[str, Any] | None:
    """`decode_cursor` for a `seal_cursor` cursor: anything else is a 400."""
    if cursor is None:
        return None
    try:
        raw = _fernet(key).decrypt(cursor + "=" * (-len(cursor) % 4))
    except (InvalidToken, ValueError):
        raise Problem(400, "bad-cursor", detail=BAD_CURSOR) from None
    return _checked(raw, keys)


def _raw(position: dict[str, Any]) -> bytes:
    return json.dumps(position, separators=(",", ":"), sort_keys=True).encode()


def _fernet(key: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(key))


def decode_cursor(cursor: str | None, *keys: str) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    return _checked(raw, keys)


def _checked(raw: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        position = json.loads(raw)
    except ValueError:
        position = None
    if (
        not isinstance(position, dict)
        or set(position) != set(keys)
        or not all(map(_is_position, position.values()))
    ):
        raise Problem(400, "bad-cursor", detail=BAD_CURSOR)
    return position


def _is_position(value: Any) -> bool:
    """What encode_cursor is given: ids and row positions. A cursor is the client's to edit,
    and anything else (null, a list, 10**30) would reach the SQL comparison as it is."""
    if type(value) is int:
        return 0 <= value <= MAX_POSITION
    return isinstance(value, str) and len(value) <= 64 and value.isprintable()
