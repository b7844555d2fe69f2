"""Against a real gunicorn on loopback: several workers and concurrent clients append to one
audit log; afterwards every 2xx the clients saw has its event and the log verifies.

Identified and pseudonymised readers run at once, so on SQLite the read phase (reads without
the write lock, then the audit event and pseudonym-index rows in a short write transaction)
is exercised under contention: no 5xx, and every pseudonym handed out resolves afterwards."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.databases import backends, throwaway_database
from tests.server import ROOT, Gateway, call

AREA_PROFILE = ROOT / "tests" / "data" / "test-area-profile.yaml"
pytestmark = pytest.mark.server


@pytest.mark.parametrize("backend", backends())
def test_workers_and_clients_share_one_verifiable_log(backend, tmp_path):
    with throwaway_database(backend, tmp_path) as url:
        gateway = Gateway(url, tmp_path)
        gateway.prepare()
        loaded = gateway.cli("agreements", "load", str(AREA_PROFILE))
        assert loaded.returncode == 0, loaded.stderr
        gateway.start()
        base = gateway.base
        try:
            headers = gateway.headers("WMP", "iom-case-management")
            housing = gateway.headers("VSP-HOUSING", "pre-cj-referral")

            def client(n: int) -> tuple[list[str], set[str]]:
                """Even clients: the police, identified; odd: a provider, pseudonymised."""
                seen, refs = [], set()
                for i in range(15):
                    rid = f"load-{n}-{i}"
                    status, response_headers, body = call(
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
                assert call(base + f"/api/v1/subjects/{ref}", headers=housing)[0] == 200

            # two caseworkers accept the same referral at once: exactly one wins
            subject = call(base + "/api/v1/subjects?limit=1", headers=headers)[2]["items"][0]["ref"]
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
            status, _, created = call(
                base + "/api/v1/referrals",
                data=referral_body,
                headers={**headers, "X-Purpose": "pre-cj-referral"},
            )
            assert status == 201, created
            mentor = gateway.headers("VSP-MENTOR", "pre-cj-referral")
            etag = call(base + f"/api/v1/referrals/{created['ref']}", headers=mentor)[1]["ETag"]

            def accept(_: int) -> int:
                return call(
                    base + f"/api/v1/referrals/{created['ref']}/accept",
                    data=b"{}",
                    headers={**mentor, "If-Match": etag},
                )[0]

            with ThreadPoolExecutor(2) as pool:
                outcomes = sorted(pool.map(accept, range(2)))
            assert outcomes == [200, 412]

            # auditor: every 2xx the clients saw is in the log, and the log verifies
            audit_headers = gateway.headers("IG-AUDIT", "ig-audit")
            logged, cursor = set(), None
            while True:
                query = "/api/v1/audit/events?limit=200" + (f"&cursor={cursor}" if cursor else "")
                page = call(base + query, headers=audit_headers)[2]
                logged |= {item["event"]["request_id"] for item in page["items"]}
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert set(ok) <= logged
        finally:
            gateway.stop()
        sealed = gateway.cli("audit", "seal", "--once")
        assert sealed.returncode == 0, sealed.stderr
        verified = gateway.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        print(
            f"\n[{backend}] load requests: {len(ok)} (all 2xx), audited: {len(logged)} events, "
            f"racing accepts: {outcomes}; "
            f"{verified.stdout.strip()}"
        )
