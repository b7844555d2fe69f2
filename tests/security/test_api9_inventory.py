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
