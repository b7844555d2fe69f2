"""The authorization server's endpoints: token, revocation, keys and metadata."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from gateway import extensions
from gateway.access import note_token_request

blp = Blueprint("oauth", __name__)


@blp.post("/oauth/token")
def issue_token() -> Response:
    response = extensions.oauth().server.create_token_response()
    note_token_request(response)
    return response


@blp.post("/oauth/revoke")
def revoke_token() -> Response:
    response = extensions.oauth().server.create_endpoint_response("revocation")
    note_token_request(response, revocation=True)
    return response


@blp.get("/oauth/jwks")
def jwks() -> Response:
    response = jsonify(extensions.keys().public_jwks().as_dict())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@blp.get("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    return jsonify(extensions.oauth().metadata())
