"""A gunicorn worker killed with SIGKILL in the middle of load: partners retry, and afterwards
every 2xx they saw has its audit event, the log verifies, and no referral is lost or doubled."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from tests.databases import backends, throwaway_database
from tests.server import Gateway, call

pytestmark = pytest.mark.server
THREADS, SECONDS, KILLS = 6, 6.0, 2


def referral_body(subject: str) -> bytes:
    return json.dumps(
        {
            "subject_ref": subject,
            "to_agency": "VSP-MENTOR",
            "service": "peer_mentoring",
            "pathways": ["ete"],
            "reasons": ["prolific_offending"],
            "consent": {"status": "pending"},
        }
    ).encode()


@pytest.mark.parametrize("backend", backends())
def test_a_killed_worker_loses_nothing(backend, tmp_path):
    with throwaway_database(backend, tmp_path) as url:
        gateway = Gateway(url, tmp_path, workers=4)
        gateway.prepare()
        gateway.start()
        try:
            read = gateway.headers("WMP", "iom-case-management")
            write = {**read, "X-Purpose": "pre-cj-referral"}
            subject = call(gateway.base + "/api/v1/subjects?limit=1", headers=read)[2]["items"][0][
                "ref"
            ]
            stop = threading.Event()
            seen_ok: list[str] = []  # request ids of every 2xx the clients saw
            created: dict[str, str] = {}  # idempotency key -> referral id
            counts = {"requests": 0, "connection_errors": 0, "5xx": 0}
            lock = threading.Lock()

            def send(path: str, headers: dict, data: bytes | None = None):  # type: ignore[no-untyped-def]
                rid = uuid.uuid4().hex
                with lock:
                    counts["requests"] += 1
                try:
                    status, _, body = call(
                        gateway.base + path,
                        data=data,
                        headers={**headers, "X-Request-ID": rid},
                        timeout=20,
                    )
                except (OSError, http.client.HTTPException):  # the worker died under this request
                    with lock:
                        counts["connection_errors"] += 1
                    return None, None
                with lock:
                    if status < 300:
                        seen_ok.append(rid)
                    elif status >= 500:
                        counts["5xx"] += 1
                return status, body

            def client(_: int) -> None:
                while not stop.is_set():
                    send("/api/v1/subjects?limit=5", read)
                    key = uuid.uuid4().hex
                    for _attempt in range(20):  # a partner retries with the same key
                        status, body = send(
                            "/api/v1/referrals",
                            {**write, "Idempotency-Key": key},
                            referral_body(subject),
                        )
                        if status == 201:
                            with lock:
                                created[key] = body["ref"]
                            break
                        time.sleep(0.05)

            with ThreadPoolExecutor(THREADS) as pool:
                futures = [pool.submit(client, n) for n in range(THREADS)]
                for _ in range(KILLS):
                    time.sleep(SECONDS / (KILLS + 1))
                    os.kill(gateway.worker_pids()[0], signal.SIGKILL)
                time.sleep(SECONDS / (KILLS + 1))
                stop.set()
                for future in futures:
                    future.result(timeout=120)
        finally:
            gateway.stop()

        sealed = gateway.cli("audit", "seal", "--once")
        assert sealed.returncode == 0, sealed.stderr
        verified = gateway.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            bodies = conn.execute(sa.text("SELECT body FROM audit_events")).scalars()
            audited = {json.loads(body)["request_id"] for body in bodies}
            referrals = conn.execute(sa.text("SELECT id FROM referrals")).scalars().all()
        engine.dispose()

        lost = set(created.values()) - set(referrals)
        duplicates = len(referrals) - len(set(created.values()))
        missing_events = set(seen_ok) - audited
        print(
            f"\n[{backend}] requests: {counts['requests']}, workers killed: {KILLS}, "
            f"connection errors: {counts['connection_errors']}, 5xx: {counts['5xx']}, "
            f"2xx seen: {len(seen_ok)}, 2xx without an audit event: {len(missing_events)}, "
            f"referrals acknowledged: {len(created)}, lost: {len(lost)}, duplicated: {duplicates}; "
            f"{verified.stdout.strip().splitlines()[0]}"
        )
        assert created, "the load made no referral"
        assert not missing_events
        assert not lost
        assert duplicates == 0
