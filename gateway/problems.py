"""RFC 9457 problem details: the one error shape every layer answers with.

Each problem has a stable `type` URI so partner systems can branch on it, and carries the
request id so a caseworker's support call can be matched to the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, json
from werkzeug.exceptions import HTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:iom-gateway:problem:"

# Status -> (type slug, title) for problems raised by the framework rather than by us.
_STANDARD = {
    400: ("bad-request", "The request is malformed"),
    401: ("unauthenticated", "Authentication is required"),
    403: ("forbidden", "The caller may not do this"),
    404: ("not-found", "No such resource"),
    405: ("method-not-allowed", "Method not allowed on this resource"),
    406: ("not-acceptable", "No acceptable representation"),
    409: ("conflict", "The request conflicts with the resource's state"),
    412: ("precondition-failed", "The resource has changed"),
    413: ("body-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Send application/json"),
    422: ("validation-failed", "The request did not validate"),
    428: ("precondition-required", "This request must be conditional"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal error"),
    503: ("unavailable", "Service temporarily unavailable"),
}


class Problem(Exception):
    """An error the API reports on purpose, with a stable type and a readable detail."""

    def __init__(
        self,
        status: int,
        slug: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **members: Any,
    ) -> None:
        default_slug, default_title = _STANDARD.get(status, ("error", "Error"))
        self.status = status
        self.slug = slug or default_slug
        self.title = title or default_title
        self.detail = detail
        self.headers = headers or {}
        self.members = members
        super().__init__(detail or self.title)


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + problem.slug,
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    body.update(problem.members)
    body["request_id"] = getattr(g, "request_id", None)
    g.problem_slug = problem.slug
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_MEDIA_TYPE)
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response


def from_http_exception(error: HTTPException) -> Problem:
    """Convert werkzeug/flask-smorest errors, keeping their headers (Allow, WWW-Authenticate)."""
    status = error.code or 500
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() not in ("content-type", "content-length")
    }
    members: dict[str, Any] = {}
    data = getattr(error, "data", None) or {}
    if "messages" in data:  # flask-smorest validation errors: {location: {field: [msg]}}
        members["errors"] = data["messages"]
    headers.update(data.get("headers") or {})
    detail = data.get("message") if status != 422 else "See `errors` for each invalid field."
    if detail is None and error.description and status < 500:
        detail = error.description
    return Problem(status, detail=detail, headers=headers, **members)
