"""OWASP API9:2023 Improper Inventory Management.

The OpenAPI document is the whole surface: every route the app serves is documented or on a
short list of public infrastructure routes, every documented operation is served, and no
other API version (or unversioned copy) answers.
"""

from __future__ import annotations

import uuid

from tests.security.conftest import API

PUBLIC_ROUTES = {
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/jwks",
    "/.well-known/oauth-authorization-server",
    "/healthz",
    "/readyz",
    f"{API}/openapi.json",
    f"{API}/docs",
    f"{API}/docs/init.js",
    f"{API}/docs/assets/<path:filename>",
    "/static/<path:filename>",
}


def test_every_route_is_documented_or_public(app, openapi, figures):
    documented = {path.replace("{", "<").replace("}", ">") for path in openapi["paths"]}
    undocumented = []
    for rule in app.url_map.iter_rules():
        template = rule.rule
        for argument in rule.arguments:
            for converter in ("string", "int", "path"):
                template = template.replace(f"<{converter}:{argument}>", f"<{argument}>")
        figures.case()
        if template not in documented and rule.rule not in PUBLIC_ROUTES:
            undocumented.append(rule.rule)
    assert not undocumented, f"routes outside the contract: {undocumented}"


def test_every_documented_operation_is_served(app, openapi, figures):
    adapter = app.url_map.bind("localhost")
    for path, item in openapi["paths"].items():
        concrete = path
        while "{" in concrete:
            start, end = concrete.index("{"), concrete.index("}")
            concrete = concrete[:start] + "1" + concrete[end + 1 :]
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                figures.case()
                adapter.match(concrete, method=method.upper())  # raises if not served


def test_no_other_api_version_answers(api, client, figures):
    for prefix in ("/api/v0", "/api/v2", "/api", "/v1", "/api/v1.1", "/api/V1"):
        for rest in ("/subjects", "/openapi.json", "/docs", f"/subjects/{uuid.uuid4()}"):
            response = api("WMP", "get", prefix + rest)
            figures.case(status=response.status_code)
            assert response.status_code in (401, 404), (prefix + rest, response.status_code)
            assert "items" not in (response.get_json(silent=True) or {})


def test_the_document_names_one_server_and_one_version(openapi):
    assert openapi["servers"] == [{"url": "/"}]
    assert openapi["info"]["version"] == "1"
    assert all(path.startswith(f"{API}/") for path in openapi["paths"])
    deprecated = [
        f"{method.upper()} {path}"
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("deprecated")
    ]
    assert not deprecated, f"deprecated operations still served: {deprecated}"


# The operations that read each optional or conditional request header, and only those.
IF_MATCH_OPERATIONS = {
    ("post", f"{API}/referrals/{{referral_id}}/consent"),
    ("post", f"{API}/referrals/{{referral_id}}/{{transition}}"),
}
IDEMPOTENT_OPERATIONS = {
    ("post", f"{API}/referrals"),
    ("post", f"{API}/referrals/{{referral_id}}/outcomes"),
    ("post", f"{API}/caseload/sync"),
}
PROBLEM = "application/problem+json"


def _operations_with_header(openapi, name: str) -> dict:
    return {
        (method, path): parameter
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"].lower() == name.lower()
    }


def _problem(openapi, method: str, path: str, status: str) -> dict:
    response = openapi["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = openapi["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    assert PROBLEM in response["content"], (method, path, status)
    return response


def test_if_match_is_documented_as_required_on_exactly_the_referral_steps(openapi):
    documented = _operations_with_header(openapi, "If-Match")
    assert set(documented) == IF_MATCH_OPERATIONS
    for parameter in documented.values():
        assert parameter["required"] is True  # 428 without it
        assert parameter["schema"]["type"] == "string"
        assert "ETag" in parameter["description"]


def test_idempotency_key_is_documented_as_optional_on_exactly_the_operations_reading_it(openapi):
    documented = _operations_with_header(openapi, "Idempotency-Key")
    assert set(documented) == IDEMPOTENT_OPERATIONS
    for parameter in documented.values():
        assert parameter["required"] is False
        schema = parameter["schema"]
        assert (schema["type"], schema["minLength"], schema["maxLength"]) == ("string", 1, 128)
        assert "printable" in parameter["description"]


def test_referral_steps_document_their_conflict_precondition_problems(openapi):
    for method, path in IF_MATCH_OPERATIONS:
        for status in ("409", "412", "428"):
            _problem(openapi, method, path, status)
        responses = openapi["paths"][path][method]["responses"]
        assert "If-Match" in responses["412"]["description"]
        assert "If-Match" in responses["428"]["description"]


def test_idempotent_operations_document_key_in_use_and_key_reused(openapi):
    for method, path in IDEMPOTENT_OPERATIONS:
        in_progress = _problem(openapi, method, path, "409")
        reused = _problem(openapi, method, path, "422")
        assert "Idempotency-Key" in in_progress["description"]
        assert "Retry-After" in in_progress["headers"]
        assert "Idempotency-Key" in reused["description"]


def test_a_suspended_agency_or_revoked_client_is_documented_as_401(openapi):
    responses = openapi["components"]["responses"]
    assert "suspended" in responses["Problem401"]["description"]
    assert "suspended" not in responses["Problem403"]["description"]
