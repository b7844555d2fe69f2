"""OWASP API8:2023 Security Misconfiguration.

- security headers on every kind of response (data, problems of every status the gateway
  produces, unrouted paths, the OAuth endpoints, the docs page);
- a forced internal error or database error answers a bare problem+json: no stack trace, no
  exception text, no SQL, no debug page, and it is still audited;
- CORS is closed: no Access-Control-Allow-* header on any response or preflight, whatever the
  Origin; no cookies are ever set;
- TRACE is refused without echoing the request, OPTIONS answers without CORS and without data.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError

from audit.models import AuditEventRow
from gateway import create_app
from tests.audit_log import last_event
from tests.security.conftest import API, LEAK_MARKERS, PROBLEM, concrete_path

CASE = "iom-case-management"
REQUIRED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
EVIL_ORIGIN = "https://evil.example"
SECRET = "SELECT given_name FROM subjects WHERE family_name = 'Secret-Surname-4471'"


def cors_headers(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [name for name, _ in response.headers if name.lower().startswith("access-control-")]


def check_headers(response, where: str) -> None:  # type: ignore[no-untyped-def]
    for name, value in REQUIRED_HEADERS.items():
        assert response.headers.get(name) == value, (where, name)
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, where
    assert "unsafe-eval" not in csp and "http:" not in csp and "*" not in csp, where
    if response.mimetype != "text/html":
        assert "default-src 'none'" in csp, where
    assert not cors_headers(response), where
    assert "Set-Cookie" not in response.headers, where
    assert "Server" not in response.headers or "/" not in response.headers["Server"], where


def sample_responses(api, client, world, app, operations):  # type: ignore[no-untyped-def]
    """One response of every kind the gateway gives."""
    yield "200 list", api("WMP", "get", f"{API}/subjects?limit=2")
    yield "200 item", api("WMP", "get", f"{API}/agreements/core-iom")
    yield "400 purpose", api("WMP", "get", f"{API}/agreements", purpose="nope")
    yield "401", client.get(f"{API}/subjects")
    yield "403", api("VSP-MENTOR", "get", f"{API}/audit/events", purpose="pre-cj-referral")
    yield "404", api("WMP", "get", f"{API}/subjects/{'0' * 36}")
    yield "404 unrouted", api("WMP", "get", f"{API}/nothing/here")
    yield "404 outside the api", client.get("/nothing/here")
    yield "405", api("WMP", "delete", f"{API}/agreements")
    yield (
        "413",
        api(
            "WMP",
            "post",
            f"{API}/subjects/search",
            data=b"{" + b" " * (app.config["GATEWAY"].max_body_bytes + 1) + b"}",
            headers={"Content-Type": "application/json"},
        ),
    )
    yield "415", api("WMP", "post", f"{API}/subjects/search", data="a=b")
    yield "422", api("WMP", "get", f"{API}/subjects?limit=0")
    yield (
        "token 200",
        client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers=world.clients["WMP"].basic_auth,
        ),
    )
    yield "token 401", client.post("/oauth/token", data={"grant_type": "client_credentials"})
    yield "metadata", client.get("/.well-known/oauth-authorization-server")
    yield "openapi", client.get(f"{API}/openapi.json")
    yield "docs", client.get(f"{API}/docs")
    yield "docs asset", client.get(f"{API}/docs/assets/swagger-ui.css")
    yield "health", client.get("/healthz")


def test_security_headers_on_every_kind_of_response(api, client, world, app, operations, figures):
    seen = set()
    for where, response in sample_responses(api, client, world, app, operations):
        figures.case(status=response.status_code)
        seen.add(response.status_code)
        check_headers(response, where)
        data = response.mimetype in ("application/json", PROBLEM)
        if data and not where.startswith(("metadata", "openapi", "token")):
            assert response.headers.get("Cache-Control") == "no-store", where
    assert {200, 400, 401, 403, 404, 405, 413, 415, 422} <= seen


def test_docs_page_loads_nothing_from_elsewhere(client):
    page = client.get(f"{API}/docs")
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src" not in csp or "'self'" in csp
    assert "default-src 'self'" in csp


def forced(monkeypatch, error: Exception) -> None:
    import gateway.api.agreements as view

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(view, "current_caller", boom)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RuntimeError(SECRET), 500),
        (KeyError(SECRET), 500),
        (RecursionError(SECRET), 500),
        (OperationalError(SECRET, {"p": "Secret-Surname-4471"}, Exception(SECRET)), 503),
        (ProgrammingError(SECRET, {"p": "Secret-Surname-4471"}, Exception(SECRET)), 503),
    ],
    ids=["runtime", "keyerror", "recursion", "db-down", "sql-error"],
)
def test_internal_errors_reveal_nothing_and_are_audited(
    api, app, db, monkeypatch, error, status, token_for, caplog, figures
):
    token_for("WMP")
    assert not app.debug
    monkeypatch.setitem(app.config, "GATEWAY_LOG_TRACEBACKS", False)  # the production default
    forced(monkeypatch, error)
    before = db.scalar(sa.select(sa.func.count()).select_from(AuditEventRow))
    response = api("WMP", "get", f"{API}/agreements")
    figures.case()  # a 5xx on purpose: counted apart
    figures.notes["forced_5xx"] += 1
    assert response.status_code == status
    assert response.content_type == PROBLEM
    text = response.get_data(as_text=True)
    assert set(response.get_json()) <= {"type", "title", "status", "detail", "request_id"}
    for marker in (*LEAK_MARKERS, "Secret-Surname", "SELECT", "given_name", type(error).__name__):
        assert marker not in text, marker
    check_headers(response, f"forced {type(error).__name__}")
    assert db.scalar(sa.select(sa.func.count()).select_from(AuditEventRow)) == before + 1
    event = last_event(db)
    assert (event["status"], event["decision"]) == (status, "deny")
    assert "Secret-Surname" not in json.dumps(event)
    # the log line names the type only: messages may carry personal data
    assert "Secret-Surname" not in caplog.text


def test_cors_is_closed_everywhere(api, client, operations, known, figures):
    for operation in operations:
        path = concrete_path(operation.path, known)
        preflight = client.options(
            path,
            headers={
                "Origin": EVIL_ORIGIN,
                "Access-Control-Request-Method": operation.method.upper(),
                "Access-Control-Request-Headers": "authorization, x-purpose",
            },
        )
        actual = api(
            "WMP",
            operation.method,
            path,
            purpose="pre-cj-referral",
            headers={"Origin": EVIL_ORIGIN},
            json={} if operation.method != "get" else None,
        )
        for response in (preflight, actual):
            figures.case(status=response.status_code)
            assert response.status_code < 500
            assert not cors_headers(response)
            assert "Vary" not in response.headers or "Origin" not in response.headers["Vary"]
    for path in ("/oauth/token", "/oauth/jwks", "/.well-known/oauth-authorization-server"):
        response = client.options(path, headers={"Origin": EVIL_ORIGIN})
        assert not cors_headers(response)


def test_trace_is_refused_without_echo(client, token_for, operations, figures):
    token = token_for("WMP")
    for path in [
        f"{API}/agreements",
        "/oauth/token",
        "/healthz",
        concrete_path(operations[0].path),
    ]:
        response = client.open(
            path,
            method="TRACE",
            headers={"Authorization": f"Bearer {token}", "X-Purpose": CASE, "X-Echo": "canary-42"},
        )
        figures.case(status=response.status_code)
        assert response.status_code in (401, 405), (path, response.status_code)
        text = response.get_data(as_text=True)
        assert token not in text and "canary-42" not in text
        if response.status_code == 405:
            assert "TRACE" not in response.headers["Allow"]


def test_options_answers_without_data_or_cors(client, token_for, operations, known, figures):
    headers = {"Authorization": f"Bearer {token_for('WMP')}", "X-Purpose": CASE}
    for operation in operations:
        path = concrete_path(operation.path, known)
        for with_token in (False, True):
            response = client.options(path, headers=headers if with_token else {})
            figures.case(status=response.status_code)
            assert response.status_code in (200, 204, 401), (path, response.status_code)
            if response.status_code in (200, 204):
                assert not response.get_data()
                assert operation.method.upper() in response.headers["Allow"]
                assert "TRACE" not in response.headers["Allow"]
            assert not cors_headers(response)


def test_production_configuration_is_not_debuggable(app):
    """A freshly created app (the test fixture turns traceback logging on; nothing else may)."""
    fresh = create_app(app.config["GATEWAY"])
    try:
        assert not fresh.debug and not fresh.testing
        assert fresh.config.get("PROPAGATE_EXCEPTIONS") in (None, False)
        assert not fresh.config.get("GATEWAY_LOG_TRACEBACKS")
        assert "debugger" not in {r.endpoint for r in fresh.url_map.iter_rules()}
    finally:
        fresh.extensions["gateway.db"].dispose()


def test_openapi_document_reveals_no_internals(client):
    text = client.get(f"{API}/openapi.json").get_data(as_text=True)
    for marker in (
        "localhost",
        "127.0.0.1",
        "instance/",
        "secret",
        "password",
        "sqlite",
        "postgres",
    ):
        assert marker not in text.lower(), marker
