"""The request path every `/api/v1` call takes, in one place.

    authenticate -> (view: decide -> load -> disclose -> note) -> audit -> respond

`begin_api_request` authenticates the caller and checks the declared purpose before any
view runs. Views decide against the agreements, load, disclose and `note_access` what they
released. `finish_request` then writes exactly one audit event for the request, in the same
transaction as any data change, and commits before the response leaves; if the event cannot
be written the caller gets a 503 and none of the data (fail closed). Errors roll back the
data changes first, so a refused request changes nothing but still leaves its audit event.
Views marked `reads_only` read without SQLite's write lock (`gateway.db.begin_read_phase`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from authlib.oauth2 import OAuth2Error
from flask import Response, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from audit.events import MAX_SAFE_INTEGER, AuditEvent, EventKind
from audit.record import record_event
from gateway import extensions
from gateway.db import begin_read_phase, end_read_phase
from gateway.oauth import Caller
from gateway.openapi import API_PREFIX
from gateway.problems import Problem, problem_response
from policies.engine import Decision

ViewFunction = TypeVar("ViewFunction", bound=Callable[..., Any])

DISCLOSURE_LEVELS = ("identified", "pseudonymised", "aggregate")  # most revealing first

log = logging.getLogger("gateway.audit")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
ON_BEHALF_OF = re.compile(r"^[\w.@:/ -]{1,128}$")
PUBLIC_API_PATHS = (f"{API_PREFIX}/openapi.json", f"{API_PREFIX}/docs")
BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass
class AccessNote:
    """What the view decided and released, for the audit event."""

    kind: EventKind = EventKind.API_ACCESS
    action: str | None = None
    resource_type: str | None = None
    subject_ids: set[str] = field(default_factory=set)
    agreement: str | None = None
    grant: str | None = None
    level: str | None = None
    fields: set[str] = field(default_factory=set)
    decision: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    agency: str | None = None


def is_audited_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX) and not path.startswith(PUBLIC_API_PATHS)


def begin_request() -> None:
    g.started_ns = time.perf_counter_ns()
    g.note = AccessNote()
    g.caller = None
    g.purpose = None
    supplied = request.headers.get("X-Request-ID")
    g.request_id = supplied if supplied and REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    if supplied and g.request_id != supplied:
        raise Problem(
            400, "bad-request-id", detail="X-Request-ID must match ^[A-Za-z0-9._:-]{1,64}$"
        )
    if "\x00" in request.path or b"%00" in request.query_string.lower():
        # PostgreSQL cannot store or compare text with NUL: refused here, not as a 503 later
        raise Problem(400, "nul-character", detail="URLs may not contain NUL characters.")
    if is_audited_api_path(request.path):
        begin_api_request()


def begin_api_request() -> None:
    if _view_attribute(request.endpoint, "_reads_only", False):
        begin_read_phase(extensions.database().session())
    try:
        caller = extensions.oauth().authenticate()
    except OAuth2Error as error:
        headers = {k: v.replace("bearer ", "Bearer ", 1) for k, v in error.get_headers()}
        headers.pop("Content-Type", None)
        status = error.status_code or 401
        raise Problem(
            status,
            "invalid-token" if status == 401 else "forbidden",
            detail=error.description or error.error,
            headers=headers,
        ) from None
    g.caller = caller
    g.note.client_id, g.note.agency = caller.client_id, caller.agency_code
    scope = _view_attribute(request.endpoint, "_scope", None)
    if scope is not None and request.method != "OPTIONS":  # OPTIONS only lists the methods
        require_scope(scope)  # before the query or body is parsed: no hints to the unentitled

    purpose = request.headers.get("X-Purpose")
    if not purpose:
        raise Problem(
            400, "purpose-required", detail="Declare the purpose of this request in X-Purpose."
        )
    if purpose not in extensions.agreements().current().purposes:
        raise Problem(
            400, "unknown-purpose", detail="X-Purpose is not a purpose any agreement names."
        )
    g.purpose = purpose

    on_behalf_of = request.headers.get("X-On-Behalf-Of")
    if on_behalf_of is not None and not ON_BEHALF_OF.fullmatch(on_behalf_of):
        raise Problem(
            400, "bad-on-behalf-of", detail="X-On-Behalf-Of must be 1-128 plain characters."
        )

    if request.args and not _declares_query(request.endpoint):
        unknown = {name: ["Unknown field."] for name in list(request.args)[:20]}
        raise Problem(
            422, detail="This operation takes no query parameters.", errors={"query": unknown}
        )

    if request.method in BODY_METHODS and request.content_length != 0 and not request.is_json:
        raise Problem(415, detail="Send the body as application/json.")


def _declares_query(endpoint: str | None) -> bool:
    """Whether the operation documents query parameters; the strict parser rejects unknown
    ones there, and an operation with none must not silently ignore a query string."""
    apidoc = _view_attribute(endpoint, "_apidoc", None)
    if apidoc is None:
        return True  # routing fails with its own 404/405
    parameters = (apidoc.get("arguments") or {}).get("parameters", [])
    return any(parameter.get("in") == "query" for parameter in parameters)


def _view_attribute(endpoint: str | None, name: str, default: Any) -> Any:
    view = current_app.view_functions.get(endpoint) if endpoint else None
    return getattr(view, name, default)


def requires_scope(scope: str) -> Callable[[ViewFunction], ViewFunction]:
    """Declare the token scope an operation needs. It is checked right after authentication,
    before the operation's query or body is validated, so a caller without it gets 403 and
    learns nothing from validation errors."""

    def declare(view: ViewFunction) -> ViewFunction:
        view._scope = scope  # type: ignore[attr-defined]
        return view

    return declare


def reads_only(view: ViewFunction) -> ViewFunction:
    """Mark a view that changes nothing but its audit event (and `write_after_read` rows):
    on SQLite it reads without holding the write lock (`gateway.db.begin_read_phase`)."""
    view._reads_only = True  # type: ignore[attr-defined]
    return view


def current_caller() -> Caller:
    """The authenticated caller of this request (views run only after authentication)."""
    return g.caller


def require_scope(scope: str) -> Caller:
    """The authenticated caller, provided its token carries `scope`."""
    caller: Caller = g.caller
    if scope not in caller.scopes:
        raise Problem(
            403,
            "insufficient-scope",
            detail=f"This operation needs the scope {scope}.",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    return caller


def note_access(**values: Any) -> AccessNote:
    """Record what this request decided and released; merged into its audit event."""
    note: AccessNote = g.note
    for name, value in values.items():
        if name in ("subject_ids", "fields"):
            getattr(note, name).update(value)
        else:
            setattr(note, name, value)
    return note


def note_permitted(decisions: Iterable[Decision], subject_ids: Iterable[str] = ()) -> AccessNote:
    """Record a permitted access: the subjects, and from the decisions that released them the
    fields, the most revealing level and every agreement@version and grant relied on."""
    decisions = list(decisions)
    levels = {d.level for d in decisions if d.level}
    basis = sorted({pair for d in decisions for pair in d.basis})
    return note_access(
        decision="permit",
        reason="ok",
        subject_ids=subject_ids,
        fields={f for d in decisions for f in d.fields},
        level=next((lv for lv in DISCLOSURE_LEVELS if lv in levels), None),
        agreement=",".join(sorted({agreement for agreement, _ in basis})) or None,
        grant=",".join(f"{agreement}#{grant}" for agreement, grant in basis) or None,
    )


def note_token_request(response: Response, *, revocation: bool = False) -> None:
    """Token endpoint attempts are audited too: issued, refused and revoked."""
    note: AccessNote = g.note
    ok = response.status_code == 200
    if revocation:
        note.kind = EventKind.TOKEN_REVOKED
    else:
        note.kind = EventKind.TOKEN_ISSUED if ok else EventKind.TOKEN_REFUSED
    note.decision = "permit" if ok else "deny"
    if not ok:
        body = response.get_json(silent=True) or {}
        note.reason = str(body.get("error", "invalid_request"))[:64]
    auth = request.authorization
    claimed = (auth.username if auth else None) or request.form.get("client_id")
    client = extensions.oauth().server.query_client(claimed) if claimed else None
    if client is not None:
        note.client_id, note.agency = client.client_id, client.agency.code
    note.details["grant_type"] = str(request.form.get("grant_type", ""))[:40]
    g.audit_token_endpoint = True


def _is_audited() -> bool:
    return is_audited_api_path(request.path) or getattr(g, "audit_token_endpoint", False)


def build_event(response: Response) -> AuditEvent:
    note: AccessNote = g.note
    decision = note.decision or ("permit" if response.status_code < 400 else "deny")
    reason = (
        note.reason
        or getattr(g, "problem_slug", None)
        or ("ok" if decision == "permit" else "denied")
    )
    rule = request.url_rule
    return AuditEvent(
        event_id=uuid.uuid4().hex,
        kind=note.kind,
        time=datetime.now(UTC),
        request_id=g.request_id,
        client_id=note.client_id,
        agency=note.agency,
        on_behalf_of=request.headers.get("X-On-Behalf-Of") if g.caller else None,
        purpose=g.purpose,
        method=request.method,
        route=rule.rule if rule is not None else None,
        action=note.action,
        resource_type=note.resource_type,
        subject_ids=tuple(sorted(note.subject_ids)),
        agreement=note.agreement,
        grant=note.grant,
        disclosure_level=note.level,
        fields=tuple(sorted(note.fields)),
        decision=decision,
        reason=reason,
        status=response.status_code,
        duration_us=(time.perf_counter_ns() - g.started_ns) // 1000,
        details={name: _loggable(value) for name, value in note.details.items()},
    )


def _loggable(value: Any) -> Any:
    """A detail as the canonical event encoding accepts it. Details often echo the caller's
    input (a path's <int:seq>, a query's from_version): an integer beyond +-(2**53 - 1) or a
    lone surrogate from a JSON body would make the event unwritable, and the request would be
    refused (503) without any trace in the log."""
    if isinstance(value, list | tuple):
        return [_loggable(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float):  # the canonical form has no floats
        return repr(value)
    return value


def finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = getattr(g, "request_id", "")
    if not hasattr(g, "note") or not _is_audited():
        return response
    session = extensions.database().session
    try:
        event = build_event(response)  # before the write transaction: it holds SQLite's lock
        succeeded = response.status_code < 400
        end_read_phase(session, keep_writes=succeeded)
        if not succeeded:
            session.rollback()
        record_event(session, event)
        session.commit()
    except (SQLAlchemyError, ValueError) as error:  # ValueError: an event that cannot be encoded
        log.error("audit write failed (request %s): %s", g.request_id, type(error).__name__)
        session.rollback()
        refused = problem_response(
            Problem(
                503,
                "audit-unavailable",
                detail="The access could not be logged, so nothing was released.",
            )
        )
        refused.headers["X-Request-ID"] = g.request_id
        return refused
    return response
