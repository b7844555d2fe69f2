"""Idempotency keys for requests that create or apply things: a retry gets the first answer.

A key is claimed inside the request's own transaction, so a request that fails (any 4xx or
5xx rolls the transaction back) releases its key and the retry runs afresh; a request that
succeeds stores its response beside the key, and a retry with the same key and the same
request replays that response without doing anything again. The same key with a different
request is refused: it is a client bug, and guessing which one was meant would be worse.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response
from sqlalchemy.exc import IntegrityError

from gateway import extensions
from gateway.access import note_access
from gateway.models import IdempotentRequest
from gateway.problems import Problem


def fingerprint(purpose: str | None, body: Any) -> str:
    """What makes two requests "the same": the declared purpose and the JSON body."""
    return hashlib.sha256(
        json.dumps({"purpose": purpose, "body": body}, sort_keys=True).encode()
    ).hexdigest()


def claim(agency_id: int, key: str, request_fingerprint: str) -> IdempotentRequest | None:
    """None when this request now holds the key; the stored request when it is a retry.

    Raises a Problem for a malformed key, a key still in use, or a key reused for a
    different request."""
    if not 1 <= len(key) <= 128 or not key.isprintable():
        raise Problem(
            400, "bad-idempotency-key", detail="Idempotency-Key must be 1-128 printable characters."
        )
    session = extensions.database().session
    stored = session.get(IdempotentRequest, (agency_id, key))
    if stored is None:
        try:
            with session.begin_nested():
                session.add(
                    IdempotentRequest(
                        agency_id=agency_id,
                        key=key,
                        fingerprint=request_fingerprint,
                        status=0,
                        body={},
                        headers={},
                    )
                )
            return None
        except IntegrityError:  # a concurrent request with the same key got there first
            stored = session.get(IdempotentRequest, (agency_id, key), populate_existing=True)
    if stored is None or stored.status == 0:
        raise Problem(
            409,
            "idempotency-in-progress",
            detail="A request with this key is in progress; retry.",
            headers={"Retry-After": "1"},
        )
    if stored.fingerprint != request_fingerprint:
        note_access(decision="deny", reason="idempotency_key_reused")
        raise Problem(
            422,
            "idempotency-key-reused",
            detail="This Idempotency-Key was used with a different request.",
        )
    note_access(decision="permit", reason="idempotent_replay")
    return stored


def remember(
    agency_id: int, key: str, status: int, body: dict[str, Any], headers: dict[str, str]
) -> None:
    """Store the response (already serialised) for the key this request claimed."""
    stored = extensions.database().session.get(IdempotentRequest, (agency_id, key))
    stored.status, stored.headers, stored.body = status, headers, body


def replay(stored: IdempotentRequest) -> Response:
    """The stored response as it was first sent, without serialising it again."""
    return Response(
        json.dumps(stored.body), stored.status, stored.headers, mimetype="application/json"
    )
