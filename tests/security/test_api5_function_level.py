"""OWASP API5:2023 Broken Function Level Authorization.

- the auditor's operations (every /audit operation in the OpenAPI document) are refused to
  every agency but the IG audit team, also to a token that carries audit:read for another
  kind of agency (a misissued or hand-made scope);
- every operation declares the scope it needs, checked before its input is validated: no
  operation works without a scope, a malformed request from a caller without the scope is
  refused (403), not validated (422), and write operations refuse read-only scopes;
- administration (agencies, clients, keys, agreement loading, sealing) has no HTTP surface,
  and methods an operation does not document are 405.
"""

from __future__ import annotations

import re
import time
import uuid

from gateway.oauth import SCOPES
from tests.security.conftest import API, PROBLEM, concrete_path, minimal_instance


def hand_made(app, agency: str, client_id: str, scope: str) -> str:
    from joserfc import jwt

    config = app.config["GATEWAY"]
    now = int(time.time())
    claims = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": client_id,
        "client_id": client_id,
        "agency": agency,
        "scope": scope,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    key = app.extensions["gateway.keys"].token_signing_jwk()
    return jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, key)


def send(client, operation, token: str, purpose: str, known=None):  # type: ignore[no-untyped-def]
    """A request that passes schema validation, so only authorisation can refuse it."""
    body = (
        minimal_instance(operation.body_schema, operation.root, {"to_agency": "VSP-MENTOR"})
        if operation.body_schema
        else None
    )
    query = {
        p["name"]: minimal_instance(p["schema"], operation.root, {})
        for p in operation.parameters("query")
        if p.get("required")
    }
    return client.open(
        concrete_path(operation.path, known),
        method=operation.method.upper(),
        json=body,
        query_string=query,
        headers={"Authorization": f"Bearer {token}", "X-Purpose": purpose},
    )


def test_auditor_operations_are_the_ig_audit_teams_alone(
    client, app, world, token_for, operations, purposes_by_agency, figures
):
    audit_ops = [o for o in operations if o.path.startswith(f"{API}/audit")]
    assert len(audit_ops) >= 5
    for agency, purposes in purposes_by_agency.items():
        if agency == "IG-AUDIT":
            continue
        demo = world.clients[agency]
        tokens = {
            "issued": token_for(agency),
            # what a mis-registered client of this agency would hold
            "with audit:read": hand_made(app, agency, demo.client_id, "audit:read"),
            "every scope": hand_made(app, agency, demo.client_id, " ".join(SCOPES)),
        }
        for label, token in tokens.items():
            for operation in audit_ops:
                for purpose in (*purposes, "ig-audit"):
                    response = send(client, operation, token, purpose)
                    figures.case(status=response.status_code)
                    assert response.status_code == 403, (agency, label, operation.label)
                    assert response.content_type == PROBLEM
                    assert "items" not in response.get_json()
    for operation in audit_ops:  # the control: the auditor is let in
        response = send(client, operation, token_for("IG-AUDIT"), "ig-audit")
        assert response.status_code != 403, operation.label


def test_the_auditor_reaches_no_personal_data(
    client, app, world, token_for, operations, known, figures
):
    """The IG audit team reads the log, not the records: every other operation is refused,
    even with every scope in its token."""
    demo = world.clients["IG-AUDIT"]
    tokens = (token_for("IG-AUDIT"), hand_made(app, "IG-AUDIT", demo.client_id, " ".join(SCOPES)))
    for operation in operations:
        if operation.path.startswith((f"{API}/audit", f"{API}/agreements")):
            continue
        for token in tokens:
            for purpose in ("ig-audit", "iom-case-management", "pre-cj-referral"):
                response = send(client, operation, token, purpose, known)
                figures.case(status=response.status_code)
                assert response.status_code in (200, 403, 404, 422), (operation.label, purpose)
                body = response.get_json()
                assert not body.get("items"), (operation.label, purpose)  # 200: an empty list
                assert not body.get("ref"), (operation.label, purpose)


def test_every_operation_declares_its_scope(app):
    """The scope check runs before the view, from the operation's declaration: an operation
    without one would rely on its view remembering to check."""
    undeclared = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(API)
        and not rule.rule.startswith((f"{API}/openapi.json", f"{API}/docs"))
        and getattr(app.view_functions[rule.endpoint], "_scope", None) not in SCOPES
    ]
    assert not undeclared


def test_no_operation_works_without_a_scope(client, app, world, operations, known, figures):
    """A token without scopes is refused everywhere with 403, before the request is validated:
    a well-formed request and a malformed one get the same answer."""
    demo = world.clients["WMP"]
    token = hand_made(app, "WMP", demo.client_id, "")
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "iom-case-management"}
    for operation in operations:
        for purpose in ("iom-case-management", "pre-cj-referral"):
            response = send(client, operation, token, purpose, known)
            figures.case(status=response.status_code)
            assert response.status_code == 403, operation.label
            assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
        malformed = client.open(
            concrete_path(operation.path, known),
            method=operation.method.upper(),
            json={"unknown_field": "x" * 100},
            query_string={"limit": "-1", "cursor": "not-a-cursor"},
            headers=headers,
        )
        figures.case(status=malformed.status_code, invalid=True)
        assert malformed.status_code == 403, operation.label


def test_write_operations_refuse_read_scopes(client, app, world, operations, known, figures):
    readonly = " ".join(s for s in SCOPES if s.endswith(":read"))
    demo = world.clients["WMP"]
    token = hand_made(app, "WMP", demo.client_id, readonly)
    writes = [o for o in operations if o.method != "get" and not o.path.endswith("/search")]
    assert writes
    for operation in writes:
        response = send(client, operation, token, "pre-cj-referral", known)
        figures.case(status=response.status_code)
        assert response.status_code == 403, operation.label


def test_administration_has_no_http_surface(app):
    """Agencies, clients, keys, agreement loading and sealing are CLI-only."""
    for word in ("admin", "agencies", "clients", "keys", "seal", "load", "debug", "console"):
        assert not any(word in r.rule.split("/") for r in app.url_map.iter_rules()), word


def served_by_another_template(openapi, path: str, method: str) -> bool:
    """GET /subjects/search is GET /subjects/{ref} with ref=search: not a 405."""
    for template, item in openapi["paths"].items():
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if template != path and method.lower() in item and re.fullmatch(pattern, path):
            return True
    return False


def test_undocumented_methods_are_405(api, openapi, figures):
    for path, item in openapi["paths"].items():
        allowed = {m.upper() for m in item if m in ("get", "post", "put", "patch", "delete")}
        concrete = concrete_path(path)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method in allowed or served_by_another_template(openapi, concrete, method):
                continue
            response = api("WMP", method.lower(), concrete, json={})
            figures.case(invalid=True, status=response.status_code)
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.content_type == PROBLEM
            assert method not in response.headers["Allow"]
