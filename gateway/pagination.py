"""Opaque cursors: keyset pagination written once, for every list and feed."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from gateway.problems import Problem


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
    if not isinstance(position, dict) or set(position) != set(keys):
        raise Problem(400, "bad-cursor", detail="The cursor is not one this list issued.")
    return position
