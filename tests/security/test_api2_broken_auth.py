"""OWASP API2:2023 Broken Authentication: what tests/gateway/test_oauth.py does not cover.

- a revoked token is refused by every operation, also where its signature was already
  verified and cached, and every refusal is audited;
- tokens are read from the Authorization header only (not the query string or a form body);
- keys named or embedded in the token header (jwk, jku, x5u, x5c, kid) are never trusted;
- the token endpoint takes no secrets in the body, no other grant types, no extra scopes.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey

from audit.models import AuditEventRow
from tests.audit_log import last_event
from tests.security.conftest import API, PROBLEM, minimal_instance

CASE = "iom-case-management"


def fresh_token(client, world, agency: str = "WMP") -> str:
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=world.clients[agency].basic_auth,
    )
    assert response.status_code == 200
    return response.get_json()["access_token"]


def concrete(path: str) -> str:
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
    return path


def call(client, operation, headers: dict) -> object:  # type: ignore[no-untyped-def]
    body = (
        minimal_instance(operation.body_schema, operation.root, {})
        if operation.body_schema
        else None
    )
    return client.open(
        concrete(operation.path), method=operation.method.upper(), json=body, headers=headers
    )


def test_a_revoked_token_is_refused_by_every_operation(client, world, db, operations, figures):
    token = fresh_token(client, world)
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": CASE}
    for operation in operations:  # before: accepted (and its signature cached)
        assert call(client, operation, headers).status_code != 401, operation.label

    revoked = client.post(
        "/oauth/revoke", data={"token": token}, headers=world.clients["WMP"].basic_auth
    )
    assert revoked.status_code == 200
    count = sa.select(sa.func.count()).select_from(AuditEventRow)
    for operation in [*operations, *operations]:  # twice: no path through a cache
        before = db.scalar(count)
        response = call(client, operation, headers)
        figures.case(status=response.status_code)
        assert response.status_code == 401, operation.label
        assert response.content_type == PROBLEM
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.get_json()["type"].endswith("invalid-token")
        assert db.scalar(count) == before + 1, f"{operation.label} refusal not audited"
        event = last_event(db)
        assert (event["decision"], event["status"], event["client_id"]) == ("deny", 401, None)
    # and it cannot be used to obtain anything at the authorization server either
    again = client.post("/oauth/revoke", data={"token": token}, headers=headers)
    assert again.status_code in (400, 401)


@pytest.mark.parametrize("where", ["query", "form", "basic", "cookie"])
def test_tokens_are_read_from_the_authorization_header_only(client, world, where, figures):
    token = fresh_token(client, world)
    purpose = {"X-Purpose": CASE}
    if where == "query":
        response = client.get(f"{API}/agreements?access_token={token}", headers=purpose)
    elif where == "form":
        response = client.post(
            f"{API}/subjects/search",
            data={"access_token": token, "scheme": "PNC", "value": "12/1234567A"},
            headers=purpose,
        )
    elif where == "basic":
        demo = world.clients["WMP"]
        response = client.get(f"{API}/agreements", headers={**demo.basic_auth, **purpose})
    else:
        client.set_cookie("access_token", token)
        response = client.get(f"{API}/agreements", headers=purpose)
    figures.case(status=response.status_code)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_with_header(app, header_extra: dict, key) -> str:
    config = app.config["GATEWAY"]
    now = int(time.time())
    claims = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": "wmp-demo",
        "client_id": "wmp-demo",
        "agency": "WMP",
        "scope": "subjects:read agreements:read audit:read",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", **header_extra}, claims, key)


@pytest.mark.parametrize("header", ["jwk", "jku", "x5u", "x5c", "kid"])
def test_keys_named_in_the_token_are_never_trusted(client, app, header, figures, monkeypatch):
    """An attacker signs with its own key and points the header at it: refused, offline."""
    import socket

    def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the gateway tried to fetch a key named in a token")

    monkeypatch.setattr(socket, "create_connection", no_network)
    attacker = ECKey.generate_key("P-256", parameters={"kid": "attacker"})
    extra = {
        "jwk": {"jwk": attacker.as_dict(private=False)},
        "jku": {"jku": "https://attacker.example/jwks.json"},
        "x5u": {"x5u": "https://attacker.example/cert.pem"},
        "x5c": {"x5c": [_b64(b"not a certificate")]},
        "kid": {"kid": "../../../../dev/null"},
    }[header]
    token = forged_with_header(app, extra, attacker)
    response = client.get(
        f"{API}/agreements", headers={"Authorization": f"Bearer {token}", "X-Purpose": CASE}
    )
    figures.case(status=response.status_code)
    assert response.status_code == 401


def sign_raw(header: dict, claims: dict, key: ECKey) -> str:
    """ES256 by hand, for headers a JOSE library refuses to produce."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.mark.parametrize("present", [True, False])
def test_critical_header_extensions_are_refused(client, app, present, figures):
    """RFC 7515 s.4.1.11: a `crit` extension the verifier does not understand is invalid,
    even under the gateway's own signature."""
    key = app.extensions["gateway.keys"].token_signing_jwk()
    good = forged_with_header(app, {}, key)
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    header = {"alg": "ES256", "typ": "at+jwt", "crit": ["urn:example:must-understand"]}
    if present:
        header["urn:example:must-understand"] = True
    headers = {"X-Purpose": CASE}
    control = client.get(
        f"{API}/agreements",
        headers={
            **headers,
            "Authorization": f"Bearer {sign_raw({'alg': 'ES256', 'typ': 'at+jwt'}, claims, key)}",
        },
    )
    assert control.status_code == 200  # the hand signer makes tokens the gateway accepts
    response = client.get(
        f"{API}/agreements",
        headers={**headers, "Authorization": f"Bearer {sign_raw(header, claims, key)}"},
    )
    figures.case(status=response.status_code)
    assert response.status_code == 401


def test_client_secret_in_the_body_or_no_authentication_is_refused(client, world, figures):
    demo = world.clients["WMP"]
    for form in (
        {
            "grant_type": "client_credentials",
            "client_id": demo.client_id,
            "client_secret": demo.client_secret,
        },
        {"grant_type": "client_credentials", "client_id": demo.client_id},
    ):
        response = client.post("/oauth/token", data=form)
        figures.case(status=response.status_code)
        assert response.status_code in (400, 401)
        assert response.get_json()["error"] == "invalid_client"
        assert "access_token" not in response.get_json()


@pytest.mark.parametrize(
    "grant_type",
    [
        "password",
        "authorization_code",
        "refresh_token",
        "implicit",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:device_code",
    ],
)
def test_only_the_client_credentials_grant_is_served(client, world, grant_type, figures):
    demo = world.clients["WMP"]
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": grant_type,
            "username": "x",
            "password": "y",
            "code": "z",
            "refresh_token": "r",
            "assertion": "a",
            "subject_token": "s",
        },
        headers=demo.basic_auth,
    )
    figures.case(status=response.status_code)
    assert response.status_code in (400, 401)
    assert "access_token" not in response.get_json()


def test_a_client_cannot_ask_for_more_scope_than_it_was_given(client, world, app, figures):
    demo = world.clients["VSP-MENTOR"]
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "audit:read subjects:search agreements:read",
        },
        headers=demo.basic_auth,
    )
    figures.case(status=response.status_code)
    if response.status_code == 200:
        token = response.get_json()["access_token"]
        claims = jwt.decode(
            token, app.extensions["gateway.keys"].public_jwks(), algorithms=["ES256"]
        ).claims
        assert set(str(claims.get("scope", "")).split()) <= set(demo.scopes)
        audit = client.get(
            f"{API}/audit/events",
            headers={"Authorization": f"Bearer {token}", "X-Purpose": "ig-audit"},
        )
        assert audit.status_code == 403
    else:
        assert response.get_json()["error"] == "invalid_scope"


def test_unauthenticated_callers_learn_nothing_about_routes(client, operations, figures):
    """Without a token every /api/v1 path, real or not, answers the same 401."""
    answers = set()
    paths = [concrete(o.path) for o in operations] + [f"{API}/no-such-thing", f"{API}/admin"]
    for path in paths:
        response = client.get(path, headers={"X-Purpose": CASE})
        figures.case(status=response.status_code)
        body = {k: v for k, v in response.get_json().items() if k != "request_id"}
        answers.add((response.status_code, json.dumps(body, sort_keys=True)))
    assert len(answers) == 1 and next(iter(answers))[0] == 401
