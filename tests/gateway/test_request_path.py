"""The request path's promises: problem+json everywhere, purpose and request ids, fail
closed when the audit cannot be written, and no route that escapes the audit log."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from audit.models import AuditEventRow

PROBLEM = "application/problem+json"


def last_events(db, n=1):
    return db.execute(
        sa.select(
            AuditEventRow.kind, AuditEventRow.decision, AuditEventRow.status, AuditEventRow.body
        )
        .order_by(AuditEventRow.id.desc())
        .limit(n)
    ).all()


def test_unknown_route_is_a_problem_and_audited(api, db):
    response = api("WMP", "get", "/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.content_type == PROBLEM
    body = response.get_json()
    assert body["type"] == "urn:iom-gateway:problem:not-found"
    assert body["request_id"] == response.headers["X-Request-ID"]
    [(kind, decision, status, _)] = last_events(db)
    assert (kind, decision, status) == ("api.access", "deny", 404)


def test_wrong_method_keeps_allow_header(api):
    response = api("WMP", "delete", "/api/v1/agreements")
    assert response.status_code == 405
    assert response.content_type == PROBLEM
    assert "GET" in response.headers["Allow"]


def test_missing_or_unknown_purpose_is_400(client, token_for):
    auth = {"Authorization": f"Bearer {token_for('WMP')}"}
    missing = client.get("/api/v1/agreements", headers=auth)
    assert missing.status_code == 400
    assert missing.get_json()["type"].endswith("purpose-required")
    unknown = client.get("/api/v1/agreements", headers={**auth, "X-Purpose": "curiosity"})
    assert unknown.status_code == 400
    assert unknown.get_json()["type"].endswith("unknown-purpose")


def test_request_id_is_echoed_or_generated(api):
    given = api("WMP", "get", "/api/v1/agreements", headers={"X-Request-ID": "case-42.retry:1"})
    assert given.headers["X-Request-ID"] == "case-42.retry:1"
    generated = api("WMP", "get", "/api/v1/agreements")
    assert len(generated.headers["X-Request-ID"]) == 32


def test_a_request_id_that_could_inject_is_refused(api):
    response = api("WMP", "get", "/api/v1/agreements", headers={"X-Request-ID": "x" * 65})
    assert response.status_code == 400
    assert response.content_type == PROBLEM


def test_body_too_large_is_413_problem(api, app):
    limit = app.config["GATEWAY"].max_body_bytes
    response = api(
        "WMP",
        "post",
        "/api/v1/subjects/search",
        data=b"{" + b" " * limit + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.content_type == PROBLEM


def test_wrong_media_type_is_415(api):
    response = api(
        "WMP",
        "post",
        "/api/v1/subjects/search",
        data="scheme=PNC",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.content_type == PROBLEM


def test_malformed_json_unknown_fields_and_wrong_types_are_4xx_problems(api):
    cases = [
        (b"{not json", 400),
        (b'{"scheme": "PNC", "value": "15/1234567A", "extra": 1}', 422),
        (b'{"scheme": 7, "value": []}', 422),
        (b'{"scheme": "PNC"}', 422),
        (b'["PNC"]', 422),
    ]
    for payload, status in cases:
        response = api(
            "WMP",
            "post",
            "/api/v1/subjects/search",
            data=payload,
            headers={"Content-Type": "application/json"},
            purpose="iom-case-management",
        )
        assert response.status_code == status, (payload, response.get_json())
        assert response.content_type == PROBLEM


def test_unknown_query_parameters_are_rejected(api):
    response = api("WMP", "get", "/api/v1/subjects?area=BIR&sort=name")
    assert response.status_code == 422
    assert "sort" in str(response.get_json()["errors"])


def test_security_headers_and_no_store(api, client):
    response = api("WMP", "get", "/api/v1/agreements")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Origin" not in response.headers


def test_fail_closed_when_the_audit_write_fails(api, db, monkeypatch):
    """If the event cannot be written the caller gets a 503 and none of the data."""
    import gateway.access

    def broken(session, event):
        raise OperationalError("INSERT INTO audit_events", {}, Exception("disk full"))

    monkeypatch.setattr(gateway.access, "record_event", broken)
    response = api("WMP", "get", "/api/v1/subjects?limit=5")
    assert response.status_code == 503
    assert response.content_type == PROBLEM
    assert "items" not in response.get_json()
    assert response.get_json()["type"].endswith("audit-unavailable")


def test_every_api_route_writes_exactly_one_audit_event(app, api, db, token_for):
    """Walk every registered /api/v1 route: each request must leave one audit event."""
    token_for("IG-AUDIT")  # issue (and audit) the token before counting
    skipped = {"/api/v1/openapi.json"}
    routes = [
        r
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/v1/")
        and r.rule not in skipped
        and not r.rule.startswith("/api/v1/docs")
    ]
    assert len(routes) >= 10
    count = sa.select(sa.func.count()).select_from(AuditEventRow)
    for rule in routes:
        path = rule.rule
        for name in rule.arguments:
            path = (
                path.replace(f"<int:{name}>", "0")
                .replace(f"<string:{name}>", "x")
                .replace(f"<{name}>", "x")
            )
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            before = db.scalar(count)
            api("IG-AUDIT", method.lower(), path, purpose="ig-audit", json={})
            assert db.scalar(count) == before + 1, f"{method} {rule.rule} did not audit"


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"status": "ready"}


def test_readiness_names_the_failed_check_and_reveals_no_internals(app, client, monkeypatch):
    """Unauthenticated, so no key versions, dialect or agreement counts; 503 when not ready."""
    ready = client.get("/readyz")
    assert ready.get_json() == {"status": "ready"}
    for leak in ("version", "sqlite", "postgresql", "agreements"):
        assert leak not in ready.get_data(as_text=True)

    def broken(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with monkeypatch.context() as patch:
        patch.setattr(app.extensions["gateway.db"].session, "execute", broken)
        down = client.get("/readyz")
    assert (down.status_code, down.content_type) == (503, PROBLEM)
    assert down.get_json()["check"] == "database"
    assert down.get_json()["type"].endswith("database-unavailable")
    assert "connection refused" not in down.get_data(as_text=True)

    with monkeypatch.context() as patch:
        patch.setattr(app.extensions["gateway.agreements"], "current", broken)
        down = client.get("/readyz")
    assert down.status_code == 503 and down.get_json()["check"] == "agreements"


def test_openapi_declares_security_headers_and_problem_errors(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    operation = spec["paths"]["/api/v1/subjects/{ref}"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {
        "X-Purpose",
        "X-Request-ID",
        "X-On-Behalf-Of",
    }
    problem = spec["components"]["responses"]["Problem404"]["content"]
    assert "application/problem+json" in problem


def test_docs_page_is_served_offline(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert "swagger-ui-bundle.js" in page.get_data(as_text=True)
    asset = client.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.data) > 100_000
