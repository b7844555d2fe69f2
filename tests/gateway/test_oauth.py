"""OAuth 2.0: the client-credentials grant, RFC 9068 tokens, and every way to be refused."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.oauth import MAX_ASSERTION_LIFETIME_SECONDS
from gateway.services.registry import add_client, revoke_client, set_agency_suspended
from tests.audit_log import last_event

PURPOSE = {"X-Purpose": "iom-case-management"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **PURPOSE}


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def claims(app, **overrides) -> dict:
    config = app.config["GATEWAY"]
    now = int(time.time())
    base = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": "wmp-demo",
        "client_id": "wmp-demo",
        "agency": "WMP",
        "scope": "subjects:read agreements:read",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    return {**base, **overrides}


def sign(app, payload: dict, header: dict | None = None, key=None) -> str:
    key = key or app.extensions["gateway.keys"].token_signing_jwk()
    return jwt.encode(header or {"alg": "ES256", "typ": "at+jwt"}, payload, key)


def test_token_endpoint_issues_a_short_lived_rfc9068_token(client, world, app):
    demo = world.clients["WMP"]
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=demo.basic_auth
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "at+jwt"}
    token = jwt.decode(
        body["access_token"], app.extensions["gateway.keys"].public_jwks(), algorithms=["ES256"]
    )
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "agency"} <= set(
        token.claims
    )
    assert token.claims["agency"] == "WMP"
    assert token.claims["exp"] - token.claims["iat"] == app.config["GATEWAY"].token_lifetime_seconds


def test_default_token_lifetime_is_ten_minutes():
    from gateway.config import Config

    assert Config().token_lifetime_seconds == 600


@pytest.mark.parametrize(
    ("who", "secret"),
    [("wmp-demo", "not-the-secret"), ("nobody-demo", "whatever"), ("", "")],
)
def test_wrong_secret_or_unknown_client_is_refused(client, who, secret):
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(who, secret)
    )
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("path", "kind"), [("/oauth/token", "token.refused"), ("/oauth/revoke", "token.revoked")]
)
def test_basic_credentials_that_are_not_utf8_are_refused_and_audited(client, db, path, kind):
    form = {"grant_type": "client_credentials", "token": "x"}
    # "!!!" is not base64 at all; "//46/w==" is, but b"\xff\xfe:\xff" is not UTF-8.
    control = client.post(path, data=form, headers={"Authorization": "Basic !!!"})
    response = client.post(path, data=form, headers={"Authorization": "Basic //46/w=="})
    assert response.status_code == control.status_code == 401
    assert response.content_type == "application/json"
    assert response.get_json() == control.get_json()
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    event = last_event(db)
    assert event["request_id"] == response.headers["X-Request-ID"]
    assert (event["kind"], event["decision"], event["status"]) == (kind, "deny", 401)
    assert event["reason"] == "invalid_client"


def test_revoked_client_gets_no_token_and_its_tokens_stop_working(client, world, db, token_for):
    token = token_for("NPS")
    assert client.get("/api/v1/agreements", headers=bearer(token)).status_code == 200
    revoke_client(db, world.clients["NPS"].client_id)
    db.commit()
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=world.clients["NPS"].basic_auth,
    )
    assert response.get_json()["error"] == "invalid_client"
    refused = client.get("/api/v1/agreements", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_suspended_agency_is_refused_at_once_whatever_tokens_it_holds(client, db, token_for):
    token = token_for("CRC")
    assert client.get("/api/v1/agreements", headers=bearer(token)).status_code == 200
    set_agency_suspended(db, "CRC", True)
    db.commit()
    response = client.get("/api/v1/agreements", headers=bearer(token))
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"


def forged_tokens(app) -> dict[str, str]:
    other_key = ECKey.generate_key("P-256")
    public_pem = app.extensions["gateway.keys"].token_signing_jwk().as_pem(private=False)
    unsigned = (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(json.dumps(claims(app)).encode()).rstrip(b"=").decode()
        + "."
    )
    hs_header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"at+jwt"}').rstrip(b"=").decode()
    hs_body = base64.urlsafe_b64encode(json.dumps(claims(app)).encode()).rstrip(b"=").decode()
    import hashlib
    import hmac

    hs_sig = (
        base64.urlsafe_b64encode(
            hmac.new(public_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest()
        )
        .rstrip(b"=")
        .decode()
    )
    return {
        "expired": sign(app, claims(app, iat=int(time.time()) - 900, exp=int(time.time()) - 300)),
        "other_key": sign(app, claims(app), key=other_key),
        "alg_none": unsigned,
        "hs256_with_public_key": f"{hs_header}.{hs_body}.{hs_sig}",
        "no_typ": sign(app, claims(app), header={"alg": "ES256"}),
        "jwt_typ": sign(app, claims(app), header={"alg": "ES256", "typ": "JWT"}),
        "wrong_issuer": sign(app, claims(app, iss="https://elsewhere.example")),
        "wrong_audience": sign(app, claims(app, aud="another-api")),
        "no_agency": sign(app, {k: v for k, v in claims(app).items() if k != "agency"}),
        "agency_mismatch": sign(app, claims(app, agency="NPS")),
        "garbage": "not.a.token",
    }


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "other_key",
        "alg_none",
        "hs256_with_public_key",
        "no_typ",
        "jwt_typ",
        "wrong_issuer",
        "wrong_audience",
        "no_agency",
        "agency_mismatch",
        "garbage",
    ],
)
def test_forged_or_unfit_tokens_are_refused(client, app, case):
    token = forged_tokens(app)[case]
    response = client.get("/api/v1/agreements", headers=bearer(token))
    assert response.status_code == 401, response.get_json()
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["type"] == "urn:iom-gateway:problem:invalid-token"


def test_a_correctly_signed_hand_made_token_is_accepted(client, app):
    # The control for the forgeries above: the same construction with the real key works.
    assert (
        client.get("/api/v1/agreements", headers=bearer(sign(app, claims(app)))).status_code == 200
    )


def test_missing_scope_is_403_with_insufficient_scope(client, app):
    token = sign(app, claims(app, scope="agreements:read"))
    response = client.get("/api/v1/subjects", headers=bearer(token))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_missing_token_is_401_with_www_authenticate(client):
    response = client.get("/api/v1/subjects", headers=PURPOSE)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revocation_rfc7009_stops_the_token(client, world, db, token_for):
    demo = world.clients["YOT-BIR"]
    token = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=demo.basic_auth
    ).get_json()["access_token"]
    assert client.get("/api/v1/agreements", headers=bearer(token)).status_code == 200
    response = client.post("/oauth/revoke", data={"token": token}, headers=demo.basic_auth)
    assert response.status_code == 200
    assert client.get("/api/v1/agreements", headers=bearer(token)).status_code == 401


def test_a_client_cannot_revoke_another_clients_token(client, world, token_for):
    token = token_for("WMP")
    response = client.post(
        "/oauth/revoke", data={"token": token}, headers=world.clients["NPS"].basic_auth
    )
    assert response.status_code == 400
    assert client.get("/api/v1/agreements", headers=bearer(token)).status_code == 200


@pytest.fixture
def key_client(db, app):
    key = ECKey.generate_key("P-256", parameters={"kid": "partner-1"})
    jwks = {"keys": [key.as_dict(private=False)]}
    issued = add_client(db, "VSP-MENTOR", "mentor case system", ["agreements:read"], jwks=jwks)
    db.commit()
    return issued.client_id, key


def assertion(app, client_id: str, key, **overrides) -> str:
    issuer = app.config["GATEWAY"].issuer
    now = int(time.time())
    payload = {
        "iss": client_id,
        "sub": client_id,
        "aud": issuer + "/oauth/token",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return jwt.encode({"alg": "ES256", "kid": "partner-1"}, payload, key)


def token_with_assertion(client, signed: str):
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
    )


def test_private_key_jwt_authenticates_and_a_replayed_assertion_is_refused(client, app, key_client):
    client_id, key = key_client
    signed = assertion(app, client_id, key)
    first = token_with_assertion(client, signed)
    assert first.status_code == 200, first.get_json()
    assert (
        client.get(
            "/api/v1/agreements", headers=bearer(first.get_json()["access_token"])
        ).status_code
        == 200
    )
    replay = token_with_assertion(client, signed)
    assert replay.status_code in (400, 401)
    assert replay.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "change",
    [
        {"aud": "https://elsewhere.example/token"},
        {"exp": int(time.time()) - 120},
        {"iss": "someone-else"},
    ],
)
def test_private_key_jwt_with_bad_claims_is_refused(client, app, key_client, change):
    client_id, key = key_client
    response = token_with_assertion(client, assertion(app, client_id, key, **change))
    assert response.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "exp",
    [int(time.time()) + MAX_ASSERTION_LIFETIME_SECONDS + 3600, 10**12, 2**62],
    ids=["hours-ahead", "beyond-datetime", "beyond-time_t"],
)
def test_private_key_jwt_expiring_too_far_ahead_is_refused_and_audited(
    client, app, db, key_client, exp
):
    from gateway.models import UsedClientAssertion

    client_id, key = key_client
    jti = uuid.uuid4().hex
    response = token_with_assertion(client, assertion(app, client_id, key, exp=exp, jti=jti))
    # 400 like every refused assertion: no Authorization header was sent (RFC 6749 s.5.2)
    assert response.status_code == 400
    assert response.content_type == "application/json"
    assert response.get_json()["error"] == "invalid_client"
    assert "access_token" not in response.get_json()
    event = last_event(db)
    assert event["request_id"] == response.headers["X-Request-ID"]
    assert (event["kind"], event["decision"], event["status"]) == ("token.refused", "deny", 400)
    assert event["reason"] == "invalid_client"
    assert db.get(UsedClientAssertion, (client_id, jti)) is None  # not kept until `exp`


def test_private_key_jwt_may_expire_up_to_the_bound_ahead(client, app, key_client):
    client_id, key = key_client
    exp = int(time.time()) + MAX_ASSERTION_LIFETIME_SECONDS - 60
    response = token_with_assertion(client, assertion(app, client_id, key, exp=exp))
    assert response.status_code == 200, response.get_json()


def test_private_key_jwt_signed_with_an_unregistered_key_is_refused(client, app, key_client):
    client_id, _ = key_client
    stranger = ECKey.generate_key("P-256", parameters={"kid": "partner-1"})
    response = token_with_assertion(client, assertion(app, client_id, stranger))
    assert response.get_json()["error"] == "invalid_client"


def test_token_refusals_are_audited(client, db):
    import sqlalchemy as sa

    from audit.models import AuditEventRow

    client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic("wmp-demo", "wrong"),
    )
    kinds = db.scalars(
        sa.select(AuditEventRow.kind).order_by(AuditEventRow.id.desc()).limit(1)
    ).all()
    assert kinds == ["token.refused"]


def test_metadata_and_jwks_are_published(client, app):
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "private_key_jwt",
    }
    jwks = client.get("/oauth/jwks").get_json()
    assert jwks["keys"] and all("d" not in key for key in jwks["keys"])
