"""Against a real gunicorn on loopback: several workers and concurrent clients append to one
audit log; afterwards every 2xx the clients saw has its event and the log verifies.

Identified and pseudonymised readers run at once, so on SQLite the read phase (reads without
the write lock, then the audit event and pseudonym-index rows in a short write transaction)
is exercised under contention: no 5xx, and every pseudonym handed out resolves afterwards."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.databases import backends, throwaway_database

ROOT = Path(__file__).resolve().parents[2]
AREA_PROFILE = ROOT / "tests" / "data" / "test-area-profile.yaml"
pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(
    url: str, *, data: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"{}")


@pytest.mark.parametrize("backend", backends())
def test_workers_and_clients_share_one_verifiable_log(backend, tmp_path):
    with throwaway_database(backend, tmp_path) as url:
        env = {
            **os.environ,
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_INSTANCE_PATH": str(tmp_path / "inst"),
            "GATEWAY_KEY_DIR": str(tmp_path / "keys"),
            "PYTHONPATH": str(ROOT),
            "GATEWAY_AUDIT_SEAL_INTERVAL": "0.2",
            "GATEWAY_AUDIT_CHECKPOINT_SECONDS": "1",
        }
        for args in (
            ("db", "upgrade"),
            ("demo", "load", "--subjects", "60"),
            ("agreements", "load", str(AREA_PROFILE)),
        ):
            subprocess.run(
                [sys.executable, "-m", "gateway.cli", *args],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                timeout=120,
            )
        creds = {
            c["agency"]: c
            for c in json.loads((tmp_path / "inst" / "demo-credentials.json").read_text())
        }
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "4",
                "wsgi:app",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if request(base + "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)

            def token_of(agency: str) -> str:
                demo = creds[agency]
                basic = f"{demo['client_id']}:{demo['client_secret']}".encode()
                status, _, body = request(
                    base + "/oauth/token",
                    data=b"grant_type=client_credentials",
                    headers={"Authorization": "Basic " + base64.b64encode(basic).decode()},
                )
                assert status == 200, body
                return body["access_token"]

            headers = {
                "Authorization": f"Bearer {token_of('WMP')}",
                "X-Purpose": "iom-case-management",
            }
            housing = {
                "Authorization": f"Bearer {token_of('VSP-HOUSING')}",
                "X-Purpose": "pre-cj-referral",
            }

            def client(n: int) -> tuple[list[str], set[str]]:
                """Even clients: the police, identified; odd: a provider, pseudonymised."""
                seen, refs = [], set()
                for i in range(15):
                    rid = f"load-{n}-{i}"
                    status, response_headers, body = request(
                        base + "/api/v1/subjects?limit=5",
                        headers={**(housing if n % 2 else headers), "X-Request-ID": rid},
                    )
                    assert status == 200, body
                    seen.append(response_headers["X-Request-ID"])
                    refs |= {item["ref"] for item in body["items"]}
                return seen, refs

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(client, range(8)))
            ok = [rid for seen, _ in results for rid in seen]
            pseudonyms = {ref for n, (_, refs) in enumerate(results) if n % 2 for ref in refs}
            assert len(ok) == 8 * 15
            assert pseudonyms and all(ref.startswith("psn") for ref in pseudonyms)
            for ref in sorted(pseudonyms):  # each was indexed when it was handed out
                assert request(base + f"/api/v1/subjects/{ref}", headers=housing)[0] == 200

            # two caseworkers accept the same referral at once: exactly one wins
            subject = request(base + "/api/v1/subjects?limit=1", headers=headers)[2]["items"][0][
                "ref"
            ]
            referral_body = json.dumps(
                {
                    "subject_ref": subject,
                    "to_agency": "VSP-MENTOR",
                    "service": "peer_mentoring",
                    "pathways": ["ete"],
                    "reasons": ["prolific_offending"],
                    "consent": {"status": "pending"},
                }
            ).encode()
            pre_cj = {**headers, "X-Purpose": "pre-cj-referral", "Content-Type": "application/json"}
            status, _, created = request(
                base + "/api/v1/referrals", data=referral_body, headers=pre_cj
            )
            assert status == 201, created
            mentor_headers = {
                "Authorization": f"Bearer {token_of('VSP-MENTOR')}",
                "X-Purpose": "pre-cj-referral",
            }
            etag = request(base + f"/api/v1/referrals/{created['ref']}", headers=mentor_headers)[1][
                "ETag"
            ]

            def accept(_: int) -> int:
                return request(
                    base + f"/api/v1/referrals/{created['ref']}/accept",
                    data=b"{}",
                    headers={
                        **mentor_headers,
                        "If-Match": etag,
                        "Content-Type": "application/json",
                    },
                )[0]

            with ThreadPoolExecutor(2) as pool:
                outcomes = sorted(pool.map(accept, range(2)))
            assert outcomes == [200, 412]

            # auditor: every 2xx the clients saw is in the log, and the log verifies
            audit_headers = {
                "Authorization": f"Bearer {token_of('IG-AUDIT')}",
                "X-Purpose": "ig-audit",
            }
            logged, cursor = set(), None
            while True:
                query = "/api/v1/audit/events?limit=200" + (f"&cursor={cursor}" if cursor else "")
                page = request(base + query, headers=audit_headers)[2]
                logged |= {item["event"]["request_id"] for item in page["items"]}
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert set(ok) <= logged
        finally:
            server.terminate()
            server.wait(timeout=30)
        sealed = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", "seal", "--once"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sealed.returncode == 0, sealed.stderr
        verified = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", "verify"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        print(
            f"\n[{backend}] load requests: {len(ok)} (all 2xx), audited: {len(logged)} events, "
            f"racing accepts: {outcomes}; "
            f"{verified.stdout.strip()}"
        )
