"""The OpenAPI contract: flask-smorest configured to tell the truth about this API.

flask-smorest documents its own error body and drops exception headers (LIBRARY-NOTES); here
every operation declares the common headers, the bearer security scheme and problem+json
error responses, and the docs page is served from packaged assets (no CDN, strict CSP).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import flask_smorest
import swagger_ui_bundle
from apispec import BasePlugin
from flask import Blueprint, Flask, Response, send_from_directory
from flask_smorest import Api

from gateway.problems import PROBLEM_MEDIA_TYPE, Problem, from_http_exception, problem_response
from schemas.problem import ProblemSchema

API_PREFIX = "/api/v1"
ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
ERROR_STATUSES = {
    "400": "Malformed request or unknown X-Purpose",
    "401": "Missing, invalid, expired or revoked access token, or its client revoked or its "
    "agency suspended (checked on every request, whatever tokens it holds)",
    "403": "Scope missing, or no agreement permits the action",
    "404": "No such record, or none the caller's agreements permit",
    "413": "Body too large",
    "415": "Body is not application/json",
    "422": "Body or query parameters failed validation",
    "429": "Rate limit exceeded",
    "503": "Audit log or database unavailable: nothing was disclosed",
}
COMMON_HEADERS = [
    {
        "name": "X-Purpose",
        "in": "header",
        "required": True,
        "description": "Declared purpose code, one the caller's agreements name",
        "schema": {"type": "string", "maxLength": 64},
    },
    {
        "name": "X-On-Behalf-Of",
        "in": "header",
        "required": False,
        "description": "The end user in the partner system (audited)",
        "schema": {"type": "string", "pattern": r"^[\w.@:/ -]{1,128}$"},
    },
    {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "Correlation id; generated when absent, always echoed",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
    },
]

# Request headers only some operations read; documented on exactly those (`blp.doc`), never
# parsed through the (strict) arguments parser, which would refuse every other header.
IDEMPOTENCY_KEY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-128 printable characters naming this request (per agency): a retry with "
    "the same key and the same request replays the first response and does nothing again; the "
    "same key with a different request is 422, and while the first is still running 409. "
    "A malformed key is 400.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
}
IF_MATCH_HEADER = {
    "name": "If-Match",
    "in": "header",
    "required": True,
    "description": "The referral's ETag from your last read of it (GET, or the response to "
    "your previous change): without it 428, and 412 if the referral has changed since",
    "schema": {"type": "string"},
}
IDEMPOTENCY_IN_PROGRESS = (
    "a request with this Idempotency-Key is still in progress (retry after Retry-After)"
)
IDEMPOTENCY_KEY_REUSED = "this Idempotency-Key was already used with a different request"
IF_MATCH_STALE = (
    "If-Match is not the referral's current ETag: it has changed since you read it; fetch it again"
)
IF_MATCH_MISSING = "If-Match is missing: send the ETag from your last read of the referral"
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}

View = TypeVar("View", bound=Callable[..., Any])


def problem_responses(
    blp: flask_smorest.Blueprint, responses: dict[int, str], headers: dict[int, dict] | None = None
) -> Callable[[View], View]:
    """Document an operation's own problem+json responses (status -> description), in place
    of the generic description every operation gets for that status."""

    def decorate(view: View) -> View:
        for status, description in responses.items():
            view = blp.alt_response(
                status,
                schema=ProblemSchema,
                content_type=PROBLEM_MEDIA_TYPE,
                description=description,
                headers=(headers or {}).get(status),
            )(view)
        return view

    return decorate


class ApiConventions(BasePlugin):
    """Adds the common headers and problem+json error responses to every operation."""

    def operation_helper(
        self, path: str | None = None, operations: dict | None = None, **_: Any
    ) -> None:
        for operation in (operations or {}).values():
            parameters = operation.setdefault("parameters", [])
            parameters.extend(dict(h) for h in COMMON_HEADERS)
            responses = operation.setdefault("responses", {})
            # flask-smorest keys responses by int: key them as the document does, so an
            # operation's own description (`problem_responses`, `alt_response`) is the one
            # served rather than a second "422" beside it. A bare int-keyed name is flask-smorest's
            # generic error response (application/json): the problem+json one replaces it.
            for code in [c for c in responses if not isinstance(c, str)]:
                documented = responses.pop(code)
                if isinstance(documented, dict):
                    generic = documented.get("description") in (None, HTTPStatus(code).phrase)
                    if generic and str(code) in ERROR_STATUSES:
                        documented["description"] = ERROR_STATUSES[str(code)]
                    responses[str(code)] = documented
                elif str(code) not in ERROR_STATUSES:
                    responses[str(code)] = documented
            for status in ERROR_STATUSES:
                responses.setdefault(status, {"$ref": f"#/components/responses/Problem{status}"})
            responses.setdefault("default", {"$ref": "#/components/responses/Problem500"})
            operation.setdefault("security", [{"bearerAuth": []}])


class GatewayApi(Api):
    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def]
        return problem_response(from_http_exception(error))

    def register_conventions(self) -> None:
        spec = self.spec
        spec.components.security_scheme(
            "bearerAuth",
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (RFC 9068, ES256)"},
        )
        for status, description in [*ERROR_STATUSES.items(), ("500", "Unexpected error")]:
            spec.components.response(
                f"Problem{status}",
                {
                    "description": description,
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": "ProblemSchema"}},
                },
            )


def init_api(app: Flask) -> GatewayApi:
    app.config.update(
        API_TITLE="IOM partner gateway",
        API_VERSION="1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Information sharing between IOM partners under their agreements. "
                "Obtain a token with the client-credentials grant at /oauth/token.",
            },
            "servers": [{"url": "/"}],
        },
    )
    api = GatewayApi(app, spec_kwargs={"extra_plugins": [ApiConventions()]})
    api.register_conventions()
    app.register_blueprint(_docs_blueprint())
    app.register_error_handler(Problem, problem_response)
    return api


def _docs_blueprint() -> Blueprint:
    blp = Blueprint("docs", __name__, url_prefix=f"{API_PREFIX}/docs")

    @blp.get("")
    def page() -> Response:
        html = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>IOM partner gateway API</title>"
            f"<link rel='stylesheet' href='{API_PREFIX}/docs/assets/swagger-ui.css'></head>"
            "<body><div id='swagger-ui'></div>"
            f"<script src='{API_PREFIX}/docs/assets/swagger-ui-bundle.js'></script>"
            f"<script src='{API_PREFIX}/docs/init.js'></script></body></html>"
        )
        return Response(html, mimetype="text/html")

    @blp.get("/init.js")
    def init_script() -> Response:
        script = (
            f"window.ui = SwaggerUIBundle({{url: '{API_PREFIX}/openapi.json', "
            "dom_id: '#swagger-ui', deepLinking: true});"
        )
        return Response(script, mimetype="text/javascript")

    @blp.get("/assets/<path:filename>")
    def assets(filename: str) -> Response:
        return send_from_directory(ASSETS, filename, max_age=86400)

    return blp
