"""OWASP API4:2023 Unrestricted Resource Consumption.

- bodies over GATEWAY_MAX_BODY_BYTES are refused with 413 on every body operation, with or
  without a Content-Length, and nested JSON deeper than the parser recurses is a 400;
- every list's page size is capped where the OpenAPI document says (limit's maximum);
- rate limits: per client on the API, per address (stricter) at the token endpoint, 429
  problem+json with Retry-After, audited; not evaded with X-Forwarded-For; shared between
  workers through Redis; enforced per worker in memory when Redis is down.
"""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import sqlalchemy as sa
from redis import Redis
from redis.exceptions import RedisError

from audit.models import AuditEventRow
from gateway import create_app
from gateway.limits import CONFIG_LIMIT, CONFIG_TOKEN_LIMIT
from tests.audit_log import last_event
from tests.security.conftest import API, PROBLEM, data_row_counts

CASE = "iom-case-management"
REDIS = ("127.0.0.1", 6379)


def audited(db) -> int:  # type: ignore[no-untyped-def]
    return db.scalar(sa.select(sa.func.count()).select_from(AuditEventRow))


# -- bodies -------------------------------------------------------------------------------


def body_paths(operations) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        o.path.replace("{", "").replace("}", "")
        for o in operations
        if o.method == "post" and o.body_schema is not None
    ]


def test_bodies_over_the_limit_are_413_everywhere(api, app, db, operations, token_for, figures):
    token_for("WMP")  # its issue is audited too: before counting
    limit = app.config["GATEWAY"].max_body_bytes
    oversized = json.dumps({"summary": "x" * limit}).encode()
    before = data_row_counts(db)
    for path in body_paths(operations):
        count = audited(db)
        response = api(
            "WMP", "post", path, data=oversized, headers={"Content-Type": "application/json"}
        )
        figures.case(invalid=True, status=response.status_code)
        assert response.status_code == 413, path
        assert response.content_type == PROBLEM
        assert audited(db) == count + 1, f"413 on {path} not audited"
    assert data_row_counts(db) == before


def test_a_body_without_content_length_is_still_limited(
    client, token_for, app, operations, figures
):
    """Chunked uploads: the server either ignores an unterminated stream or cuts it at the
    limit; it never reads an unbounded body, and never fails."""
    limit = app.config["GATEWAY"].max_body_bytes
    for path in body_paths(operations):
        for terminated in (False, True):
            response = client.post(
                path,
                input_stream=io.BytesIO(b'{"summary": "' + b"x" * (limit * 2) + b'"}'),
                headers={
                    "Authorization": f"Bearer {token_for('WMP')}",
                    "X-Purpose": CASE,
                    "Content-Type": "application/json",
                    "Transfer-Encoding": "chunked",
                },
                environ_overrides={"wsgi.input_terminated": terminated},
            )
            figures.case(invalid=True, status=response.status_code)
            assert 400 <= response.status_code < 500, (path, terminated, response.status_code)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_400(api, operations, depth, figures):
    for path in body_paths(operations):
        response = api(
            "WMP",
            "post",
            path,
            data=b"[" * depth + b"]" * depth,
            headers={"Content-Type": "application/json"},
        )
        figures.case(invalid=True, status=response.status_code)
        assert response.status_code in (400, 422), (path, response.status_code)
        assert response.content_type == PROBLEM


def test_integers_too_long_to_convert_are_a_400(api, operations, figures):
    """Python refuses to turn more than 4,300 digits into an int (a ValueError, not JSON's)."""
    for path in body_paths(operations):
        for body in (b'{"atomic": ' + b"9" * 5000 + b"}", b"[" + b"1" * 5000 + b"]"):
            response = api("WMP", "post", path, data=body,
                           headers={"Content-Type": "application/json"})
            figures.case(invalid=True, status=response.status_code)
            assert response.status_code == 400, (path, response.status_code)
            assert response.content_type == PROBLEM


def test_huge_arrays_are_refused_by_size_not_processed(api, operations, figures):
    for path in body_paths(operations):
        body = {"pathways": ["ete"] * 50_000, "reasons": ["other"] * 50_000}
        response = api("WMP", "post", path, json=body, purpose="pre-cj-referral")
        figures.case(invalid=True, status=response.status_code)
        assert 400 <= response.status_code < 500


# -- pages --------------------------------------------------------------------------------


def test_page_size_is_capped_on_every_list(api, operations, purposes_by_agency, figures):
    lists = [o for o in operations if any(p["name"] == "limit" for p in o.parameters("query"))]
    assert len(lists) >= 3
    for operation in lists:
        limit = next(p for p in operation.parameters("query") if p["name"] == "limit")
        maximum = limit["schema"].get("maximum")
        assert maximum is not None and maximum <= 1000, f"{operation.label}: no page cap"
        agency, purpose = next(
            (a, p)
            for a, ps in purposes_by_agency.items()
            for p in ps
            if api(a, "get", operation.path, purpose=p).status_code == 200
        )
        for value, ok in ((maximum + 1, False), (10**9, False), (0, False), (maximum, True)):
            response = api(agency, "get", f"{operation.path}?limit={value}", purpose=purpose)
            figures.case(invalid=not ok, status=response.status_code)
            if ok:
                assert response.status_code == 200
                assert len(response.get_json()["items"]) <= maximum
            else:
                assert response.status_code == 422, (operation.label, value)
        default = api(agency, "get", operation.path, purpose=purpose).get_json()
        assert len(default["items"]) <= limit["schema"].get("default", maximum)


# -- rate limits --------------------------------------------------------------------------


def assert_429(response) -> int:  # type: ignore[no-untyped-def]
    assert response.status_code == 429
    assert response.content_type == PROBLEM
    assert response.get_json()["type"].endswith("too-many-requests")
    retry_after = int(response.headers["Retry-After"])
    # A per-minute window; Flask-Limiter rounds the reset time up to the next whole second
    # (`int(reset + 1)`), so at the very start of a window the wait is 61 s.
    assert 1 <= retry_after <= 61
    return retry_after


def test_per_client_limit_is_429_with_retry_after_and_audited(
    api, db, rate_limits, token_for, figures
):
    for agency in ("WMP", "NPS"):
        token_for(agency)  # issue tokens before the limits apply
    rate_limits(api="5 per minute")
    for _ in range(5):
        assert api("WMP", "get", f"{API}/agreements").status_code == 200
    count = audited(db)
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    for headers in ({}, spoofed):
        response = api("WMP", "get", f"{API}/agreements", headers=headers)
        figures.case(status=response.status_code)
        assert_429(response)
    assert audited(db) == count + 2
    event = last_event(db)
    assert (event["status"], event["decision"], event["reason"]) == (
        429,
        "deny",
        "too-many-requests",
    )
    assert (event["client_id"], event["agency"]) == ("wmp-demo", "WMP")
    # a different client has its own allowance, and health checks are never limited
    assert api("NPS", "get", f"{API}/agreements").status_code == 200
    assert api("WMP", "get", "/healthz").status_code == 200


def test_refused_requests_count_too(api, client, db, rate_limits, token_for, figures):
    """A client cannot flood for free with requests the gateway refuses before any view runs
    (an unknown purpose), nor can anyone with bad tokens (counted by address)."""
    token_for("WMP")
    rate_limits(api="3 per minute")
    statuses = [
        api("WMP", "get", f"{API}/agreements", purpose="no-such-purpose").status_code
        for _ in range(5)
    ]
    figures.case(status=statuses[-1])
    assert statuses == [400] * 3 + [429] * 2, statuses
    assert last_event(db)["reason"] == "too-many-requests"
    bad = {"Authorization": "Bearer not.a.token", "X-Purpose": CASE}
    answers = [
        client.get(f"{API}/agreements", headers=bad, environ_overrides={"REMOTE_ADDR": "192.0.2.9"})
        for _ in range(5)
    ]
    assert [r.status_code for r in answers] == [401] * 3 + [429] * 2
    assert_429(answers[-1])
    event = last_event(db)
    assert (event["status"], event["client_id"]) == (429, None)
    elsewhere = client.get(
        f"{API}/agreements", headers=bad, environ_overrides={"REMOTE_ADDR": "192.0.2.10"}
    )
    assert elsewhere.status_code == 401  # another address: its own allowance
    assert api("NPS", "get", f"{API}/agreements").status_code == 200


def test_token_endpoint_is_limited_per_address_and_refusals_audited(
    client, world, db, rate_limits, figures
):
    rate_limits(token="3 per minute")
    demo = world.clients["NPS"]

    def token(address: str = "127.0.0.1", **headers: str):  # type: ignore[no-untyped-def]
        return client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={**demo.basic_auth, **headers},
            environ_overrides={"REMOTE_ADDR": address},
        )

    for _ in range(3):
        assert token().status_code == 200
    for headers in ({}, {"X-Forwarded-For": "198.51.100.7"}):
        response = token(**headers)
        figures.case(status=response.status_code)
        assert_429(response)
        assert "access_token" not in response.get_json()
    event = last_event(db)
    assert (event["kind"], event["status"], event["reason"]) == (
        "token.refused",
        429,
        "too-many-requests",
    )
    assert event["agency"] == "NPS"
    revoke = client.post(
        "/oauth/revoke",
        data={"token": "x"},
        headers=demo.basic_auth,
        environ_overrides={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert revoke.status_code == 429  # revocation checks secrets too: same allowance
    assert token("192.0.2.44").status_code == 200  # another address, another allowance


def test_wrong_secrets_count_towards_the_token_limit(client, world, rate_limits, figures):
    rate_limits(token="5 per minute")
    demo = world.clients["WMP"]
    import base64

    wrong = {
        "Authorization": "Basic " + base64.b64encode(f"{demo.client_id}:guess".encode()).decode()
    }
    answers = [
        client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=wrong)
        for _ in range(8)
    ]
    statuses = [r.status_code for r in answers]
    figures.case(status=statuses[-1])
    assert statuses[:5] == [401] * 5 or statuses[:5] == [400] * 5
    assert statuses[5:] == [429] * 3, statuses
    ok = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=demo.basic_auth
    )
    assert ok.status_code == 429  # the right secret waits too: guessing is not free


def redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def worker(world, app, monkeypatch, storage: str, prefix: str) -> Iterator:  # type: ignore[no-untyped-def]
    """Another app instance (as another gunicorn worker would be) on the test's transaction."""
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_STORAGE", storage)
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_PREFIX", prefix)
    other = create_app(app.config["GATEWAY"])
    other.config.update(TESTING=True, **{CONFIG_LIMIT: "4 per minute", CONFIG_TOKEN_LIMIT: "off"})
    connection = app.extensions["gateway.db"].session_factory.kw["bind"]
    database = other.extensions["gateway.db"]
    database.session.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield other
    finally:
        database.session.remove()
        if storage.startswith("redis"):  # only this test's keys: others may share the database
            with suppress(RedisError), Redis.from_url(storage, socket_timeout=1) as redis:
                stale = list(redis.scan_iter(f"*{prefix}*"))
                if stale:
                    redis.delete(*stale)
        database.engine.dispose()


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_redis_shares_one_allowance_between_workers(world, app, token_for, monkeypatch, figures):
    headers = {"Authorization": f"Bearer {token_for('WMP')}", "X-Purpose": CASE}
    prefix = f"iomgw-test-{uuid.uuid4().hex[:8]}"
    storage = "redis://127.0.0.1:6379/15"
    with (
        worker(world, app, monkeypatch, storage, prefix) as one,
        worker(world, app, monkeypatch, storage, prefix) as two,
    ):
        statuses = [
            (one if i % 2 else two)
            .test_client()
            .get(f"{API}/agreements", headers=headers)
            .status_code
            for i in range(6)
        ]
    figures.case(status=statuses[-1])
    figures.notes["redis_statuses"] = "".join(str(s)[0] for s in statuses)
    assert statuses == [200] * 4 + [429] * 2, statuses


def test_memory_storage_is_per_worker(world, app, token_for, monkeypatch, figures):
    """The control for the Redis test: without shared storage each worker counts alone."""
    headers = {"Authorization": f"Bearer {token_for('WMP')}", "X-Purpose": CASE}
    with (
        worker(world, app, monkeypatch, "memory://", "a") as one,
        worker(world, app, monkeypatch, "memory://", "b") as two,
    ):
        statuses = [
            (one if i % 2 else two)
            .test_client()
            .get(f"{API}/agreements", headers=headers)
            .status_code
            for i in range(8)
        ]
    figures.case(status=statuses[-1])
    assert statuses == [200] * 8


def test_redis_down_still_limits_and_never_fails(world, app, token_for, monkeypatch, figures):
    headers = {"Authorization": f"Bearer {token_for('WMP')}", "X-Purpose": CASE}
    with worker(world, app, monkeypatch, "redis://127.0.0.1:1/0", "down") as alone:
        statuses = [
            alone.test_client().get(f"{API}/agreements", headers=headers).status_code
            for _ in range(6)
        ]
    figures.case(status=statuses[-1])
    assert statuses == [200] * 4 + [429] * 2, statuses
