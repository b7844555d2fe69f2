"""OAuth 2.0 for partner systems: the client-credentials grant, RFC 9068 JWT access tokens,
private_key_jwt client authentication (RFC 7523), revocation (RFC 7009).

authlib does the protocol; this module supplies what authlib leaves to us (see
LIBRARY-NOTES): explicit algorithm allowlists, `typ: at+jwt` enforced, a short token
lifetime, a replay cache for client assertions, hashed secrets, and revocation/suspension
checked on every request even when a token's signature was already verified.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import InvalidClientError, grants
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc6749.requests import JsonRequest, OAuth2Request
from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator, JWTBearerTokenValidator
from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaims
from flask import Flask, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from gateway.keys import TOKEN_ALGORITHM, KeyStore
from gateway.models import Agency, ApiClient, RevokedToken, UsedClientAssertion

ACCESS_TOKEN_ALGORITHMS = [TOKEN_ALGORITHM]
CLIENT_ASSERTION_ALGORITHMS = ["ES256", "ES384", "PS256", "RS256"]
# RFC 7523 assertions are made for one request and are short-lived. Their jti is kept in the
# replay cache until `exp`, so an assertion may not claim to live longer than this.
MAX_ASSERTION_LIFETIME_SECONDS = 3600
SCOPES = (
    "subjects:read",
    "subjects:search",
    "agreements:read",
    "referrals:read",
    "referrals:write",
    "caseload:read",
    "caseload:write",
    "metrics:read",
    "audit:read",
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: one API client of exactly one agency."""

    client_id: str
    agency_id: int
    agency_code: str
    agency_kind: str
    scopes: frozenset[str]
    jti: str


def _session():
    from gateway.extensions import database

    return database().session


def query_client(client_id: str) -> ApiClient | None:
    if not isinstance(client_id, str) or len(client_id) > 64 or "\x00" in client_id:
        return None  # (PostgreSQL refuses NUL in a query: an unknown client, not a 503)
    client = _session().scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id))
    return client if client is not None and client.active else None


def client_secret_basic(query_client: Any, request: OAuth2Request) -> ApiClient | None:
    """authlib's `client_secret_basic`, with Basic credentials that are not UTF-8 treated as
    absent, as authlib already treats ones that are not base64. Otherwise its
    UnicodeDecodeError escapes the token and revocation endpoints as a 500 with no audit
    event; this way the caller gets the usual 401 invalid_client, audited as refused."""
    try:
        return authenticate_client_secret_basic(query_client, request)
    except UnicodeDecodeError:
        return None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]


class PrivateKeyJWT(JWTBearerClientAssertion):
    """RFC 7523 client authentication with keys the client registered, and no replays."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, issuer: str) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.issuer = issuer

    def get_audiences(self) -> list[str]:
        return [self.issuer + "/oauth/token", self.issuer]

    def resolve_client_public_key(self, client: ApiClient) -> KeySet:
        if not client.jwks:
            raise InvalidClientError(description="The client has no registered keys.")
        return KeySet.import_key_set(client.jwks)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=CLIENT_ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="The client assertion is not valid.") from exc
        exp = token.claims.get("exp")
        if not isinstance(exp, int):
            raise InvalidClientError(description="The client assertion must expire.")
        # Before `verify_claims` stores the jti until `exp`: a far-future exp would keep it
        # there for ever, and one beyond datetime's range cannot be stored at all (a 500).
        if exp > time.time() + MAX_ASSERTION_LIFETIME_SECONDS + self.leeway:
            raise InvalidClientError(description="The client assertion expires too far ahead.")
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        # `exp` is an int at most MAX_ASSERTION_LIFETIME_SECONDS ahead (process_assertion_claims)
        session = _session()
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        try:
            with session.begin_nested():
                session.add(
                    UsedClientAssertion(
                        client_id=claims["sub"], jti=str(jti)[:200], expires_at=expires
                    )
                )
        except IntegrityError:
            return False
        return True


class AccessTokenGenerator(JWTBearerTokenGenerator):
    def __init__(self, issuer: str, audience: str, keys: KeyStore, lifetime: int) -> None:
        super().__init__(issuer, alg=TOKEN_ALGORITHM, expires_generator=lambda c, g: lifetime)
        self.audience = audience
        self.keys = keys

    def get_jwks(self):  # type: ignore[no-untyped-def]
        return self.keys.token_signing_jwk()

    def get_audiences(self, client, user, scope):  # type: ignore[no-untyped-def]
        return self.audience

    def get_extra_claims(self, client, grant_type, user, scope):  # type: ignore[no-untyped-def]
        return {"agency": client.agency.code}


class AccessTokenValidator(JWTBearerTokenValidator):
    """Verifies ES256 `at+jwt` tokens only, caching verified signatures per worker.

    The cache holds only what the signature proves (the claims) until the token expires;
    revocation and client/agency suspension are looked up on every request.
    """

    CACHE_LIMIT = 10_000

    def __init__(self, issuer: str, audience: str, keys: KeyStore) -> None:
        super().__init__(issuer=issuer, resource_server=audience)
        self.keys = keys
        self.jwks = keys.public_jwks()
        self._cache: dict[bytes, JWTAccessTokenClaims] = {}
        self._lock = threading.Lock()

    def get_jwks(self) -> KeySet:
        return self.jwks

    def authenticate_token(self, token_string: str) -> JWTAccessTokenClaims:
        cache_key = hashlib.sha256(token_string.encode()).digest()
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        try:
            token = jwt.decode(token_string, self.jwks, algorithms=ACCESS_TOKEN_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidTokenError(realm=self.realm) from exc
        if token.header.get("typ") != "at+jwt":
            raise InvalidTokenError(realm=self.realm, description="not an at+jwt token")
        claims = JWTAccessTokenClaims(token.claims, token.header, self._claims_options())
        try:
            claims.validate()
        except JoseError as exc:
            raise InvalidTokenError(realm=self.realm) from exc
        with self._lock:
            if len(self._cache) >= self.CACHE_LIMIT:
                now = time.time()
                self._cache = {k: v for k, v in self._cache.items() if v["exp"] > now}
                if len(self._cache) >= self.CACHE_LIMIT:
                    self._cache.clear()
            self._cache[cache_key] = claims
        return claims

    def _claims_options(self) -> dict[str, Any]:
        return {
            "iss": {"essential": True, "value": self.issuer},
            "exp": {"essential": True},
            "aud": {"essential": True, "value": self.resource_server},
            "sub": {"essential": True},
            "client_id": {"essential": True},
            "iat": {"essential": True},
            "jti": {"essential": True},
            "agency": {"essential": True},
        }

    def validate_token(self, token, scopes, request, **kwargs):  # type: ignore[no-untyped-def]
        # Not authlib's: it validates every claim again on every request, but
        # `authenticate_token` validated them before caching, and only expiry changes with time.
        if token["exp"] <= time.time():
            raise InvalidTokenError(realm=self.realm, description="token expired")
        if self.scope_insufficient(token.get("scope"), scopes):
            raise InsufficientScopeError()


class Revocation(RevocationEndpoint):
    """RFC 7009 for self-contained tokens: remember the revoked `jti` until expiry."""

    SUPPORTED_TOKEN_TYPES = ("access_token",)
    CLIENT_AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]

    def __init__(self, server: AuthorizationServer, validator: AccessTokenValidator) -> None:
        super().__init__(server)
        self.validator = validator

    def query_token(self, token_string: str, token_type_hint: str | None):  # type: ignore[no-untyped-def]
        try:
            return _RevocableToken(self.validator.authenticate_token(token_string))
        except InvalidTokenError:
            return None  # RFC 7009 s.2.2: invalid tokens do not cause an error

    def revoke_token(self, token: _RevocableToken, request: Any) -> None:
        session = _session()
        if session.get(RevokedToken, token.claims["jti"]) is None:
            expires = datetime.fromtimestamp(token.claims["exp"], UTC)
            session.add(RevokedToken(jti=token.claims["jti"], expires_at=expires))


class _RevocableToken:
    def __init__(self, claims: JWTAccessTokenClaims) -> None:
        self.claims = claims

    def check_client(self, client: ApiClient) -> bool:
        return self.claims["client_id"] == client.client_id


# Every request asks, in one round trip: the client with its agency, and whether this jti
# was revoked. Built once, so SQLAlchemy computes its cache key once.
_CALLER_STANDING = (
    sa.select(
        ApiClient.revoked_at,
        Agency.id,
        Agency.code,
        Agency.kind,
        Agency.suspended_at,
        sa.exists().where(RevokedToken.jti == sa.bindparam("jti")),
    )
    .join(Agency, Agency.id == ApiClient.agency_id)
    .where(ApiClient.client_id == sa.bindparam("client_id"))
)


class OAuth:
    """The authorization server and resource protector of one app."""

    def __init__(self, app: Flask, keys: KeyStore) -> None:
        config = app.config["GATEWAY"]
        self.issuer = config.issuer
        self.server = AuthorizationServer(
            app, query_client=query_client, save_token=lambda t, r: None
        )
        self.server.register_grant(ClientCredentialsGrant)
        self.server.register_client_auth_method("client_secret_basic", client_secret_basic)
        self.server.register_client_auth_method(
            PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT(config.issuer)
        )
        self.server.register_token_generator(
            "default",
            AccessTokenGenerator(
                config.issuer, config.audience, keys, config.token_lifetime_seconds
            ),
        )
        self.validator = AccessTokenValidator(config.issuer, config.audience, keys)
        self.server.register_endpoint(Revocation(self.server, self.validator))
        self.protector = ResourceProtector()
        self.protector.register_token_validator(self.validator)

    def authenticate(self) -> Caller:
        """The caller behind this request's bearer token; raises authlib's OAuth2Error."""
        # The path, not authlib's FlaskJsonRequest: bearer validation reads only the headers,
        # and rebuilding the full URL (IRI decoding) for it cost more than checking the token.
        bearer_request = JsonRequest(request.method, request.path, request.headers)
        token = self.protector.validate_request(None, bearer_request)
        row = (
            _session()
            .connection()
            .execute(_CALLER_STANDING, {"client_id": token["client_id"], "jti": token["jti"]})
            .first()
        )
        if row is None:
            raise InvalidTokenError(realm=self.validator.realm, description="client not active")
        client_revoked, agency_id, agency_code, agency_kind, suspended, token_revoked = row
        if token_revoked:
            raise InvalidTokenError(realm=self.validator.realm, description="token revoked")
        if client_revoked or suspended or agency_code != token["agency"]:
            raise InvalidTokenError(realm=self.validator.realm, description="client not active")
        return Caller(
            client_id=token["client_id"],
            agency_id=agency_id,
            agency_code=agency_code,
            agency_kind=agency_kind,
            scopes=frozenset(str(token.get("scope") or "").split()),
            jti=token["jti"],
        )

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization-server metadata."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.issuer + "/oauth/token",
            "jwks_uri": self.issuer + "/oauth/jwks",
            "revocation_endpoint": self.issuer + "/oauth/revoke",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": (
                ClientCredentialsGrant.TOKEN_ENDPOINT_AUTH_METHODS
            ),
            "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
            "revocation_endpoint_auth_methods_supported": Revocation.CLIENT_AUTH_METHODS,
            "scopes_supported": list(SCOPES),
            "access_token_signing_alg_values_supported": ACCESS_TOKEN_ALGORITHMS,
        }
