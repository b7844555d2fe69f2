"""Opaque cursors: keyset pagination written once, for every list and feed."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from gateway.problems import Problem

MAX_POSITION = 2**63 - 1  # BIGINT


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *keys: str) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        position = None
    if (
        not isinstance(position, dict)
        or set(position) != set(keys)
        or not all(map(_is_position, position.values()))
    ):
        raise Problem(400, "bad-cursor", detail="The cursor is not one this list issued.")
    return position


def _is_position(value: Any) -> bool:
    """What encode_cursor is given: ids and row positions. A cursor is the client's to edit,
    and anything else (null, a list, 10**30) would reach the SQL comparison as it is."""
    if type(value) is int:
        return 0 <= value <= MAX_POSITION
    return isinstance(value, str) and len(value) <= 64 and value.isprintable()
