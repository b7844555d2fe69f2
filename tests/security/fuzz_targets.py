"""Coverage-guided fuzz targets (atheris/libFuzzer), run as a subprocess by test_fuzz.py.

    python -m tests.security.fuzz_targets agreements CORPUS_DIR -runs=300 -seed=1
    python -m tests.security.fuzz_targets bodies CORPUS_DIR -runs=300 -seed=1

libFuzzer ends the process itself (on -runs, or on a crash: any exception escaping the target),
so these cannot run inside pytest. Each target writes its counts as JSON to $FUZZ_STATS after
every input: cases, invalid (refused inputs), server_errors, ok.

agreements: `policies.agreements.load_agreement_text` on arbitrary text; only AgreementError
may escape. Seeded with the real agreements and the bad ones from tests/policies.

bodies: JSON request bodies through the Flask test client against a throwaway SQLite demo;
never a 5xx. The input picks the operation, the agency and how to build the body (raw bytes,
a JSON value built from the input, or a valid body with one field replaced).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
STATS = os.environ.get("FUZZ_STATS")
counts: dict[str, int] = {"cases": 0, "invalid": 0, "server_errors": 0, "ok": 0}
_stats_fd = os.open(STATS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if STATS else None


def record(outcome: str, status: int | None = None) -> None:
    counts["cases"] += 1
    counts[outcome] += 1
    if status is not None:
        counts[str(status)] = counts.get(str(status), 0) + 1
    if _stats_fd is not None:
        os.pwrite(_stats_fd, json.dumps(counts).encode().ljust(400), 0)


# -- agreements ---------------------------------------------------------------------------


def agreements_target() -> None:
    with atheris.instrument_imports(include=["policies", "yaml", "marshmallow"]):
        from policies.agreements import AgreementError, load_agreement_text
        from policies.vocabulary import DEMO_AGENCIES

    def one_input(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        try:
            load_agreement_text(text, DEMO_AGENCIES, source="fuzz")
        except AgreementError:
            record("invalid")
        else:
            record("ok")
        # anything else escapes: libFuzzer reports it as a crash with the input saved

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


# -- request bodies -----------------------------------------------------------------------

AGENCIES = ("WMP", "NPS", "VSP-MENTOR", "IG-AUDIT")
PURPOSES = {
    "WMP": "pre-cj-referral",
    "NPS": "iom-case-management",
    "VSP-MENTOR": "pre-cj-referral",
    "IG-AUDIT": "ig-audit",
}


def json_value(fdp, depth: int = 0):  # type: ignore[no-untyped-def]
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind in (4, 5):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    if kind == 6:
        return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {
        fdp.ConsumeUnicodeNoSurrogates(12): json_value(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    }


def bodies_target() -> None:
    with atheris.instrument_imports(include=["gateway", "schemas", "policies", "webargs"]):
        import gateway.app  # noqa: F401  (instrumented before create_app imports it)
    from gateway import create_app
    from gateway.agreement_store import load_agreement_files
    from gateway.config import Config
    from gateway.demo import load_demo
    from gateway.migrate import upgrade
    from tests.security.conftest import minimal_instance, resolve

    # libFuzzer ends the process: the caller owns (and cleans) the working directory
    directory = Path(os.environ.get("FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="iomgw-fuzz-"))
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / 'fuzz.db'}"
    upgrade(url)
    config = Config(
        env="test",
        instance_path=directory / "instance",
        database_url=url,
        key_dir=directory / "keys",
        audit_seal_in_process=False,
    )
    app = create_app(config)
    app.config.update(GATEWAY_RATE_LIMIT="off", GATEWAY_TOKEN_RATE_LIMIT="off")
    with app.app_context():
        session = app.extensions["gateway.db"].session
        issued = {c.agency: c for c in load_demo(session, seed=2015, subjects=30)}
        session.flush()
        load_agreement_files(session, sorted(config.agreements_dir.glob("*.yaml")))
        session.commit()
    client = app.test_client()
    tokens = {}
    for agency in AGENCIES:
        demo = issued[agency]
        answer = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(demo.client_id, demo.client_secret),
        )
        tokens[agency] = answer.get_json()["access_token"]

    def headers(agency: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[agency]}", "X-Purpose": PURPOSES[agency]}

    listing = {**headers("WMP"), "X-Purpose": "iom-case-management"}
    subject = client.get("/api/v1/subjects?limit=1", headers=listing).get_json()
    subject_ref = subject["items"][0]["ref"]
    spec = client.get("/api/v1/openapi.json").get_json()
    created = client.post(
        "/api/v1/referrals",
        headers=headers("WMP"),
        json={
            "subject_ref": subject_ref,
            "to_agency": "VSP-MENTOR",
            "service": "peer_mentoring",
            "pathways": ["ete"],
            "reasons": ["other"],
            "consent": {"status": "pending"},
        },
    ).get_json()
    referral = created.get("ref", "00000000-0000-4000-8000-000000000000")
    operations = []
    for path, item in sorted(spec["paths"].items()):
        for method, operation in item.items():
            if method not in ("post", "put", "patch", "delete"):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            schema = resolve(spec, content["application/json"]["schema"])
            overrides = {"subject_ref": subject_ref, "to_agency": "VSP-MENTOR"}
            concrete = path.replace("{referral_id}", referral).replace("{transition}", "accept")
            while "{" in concrete:
                concrete = (
                    concrete[: concrete.index("{")] + "x" + concrete[concrete.index("}") + 1 :]
                )
            operations.append((method, concrete, minimal_instance(schema, spec, overrides)))

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        method, path, valid = operations[fdp.ConsumeIntInRange(0, len(operations) - 1)]
        agency = AGENCIES[fdp.ConsumeIntInRange(0, len(AGENCIES) - 1)]
        mode = fdp.ConsumeIntInRange(0, 2)
        if mode == 0:
            body = fdp.ConsumeBytes(fdp.remaining_bytes())
        elif mode == 1:
            body = json.dumps(json_value(fdp)).encode()
        else:
            changed = json.loads(json.dumps(valid))
            keys = sorted(changed) or ["x"]
            changed[keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]] = json_value(fdp)
            body = json.dumps(changed).encode()
        response = client.open(
            path,
            method=method.upper(),
            data=body,
            headers={**headers(agency), "Content-Type": "application/json"},
        )
        if response.status_code >= 500:
            record("server_errors", response.status_code)
            raise RuntimeError(
                f"{response.status_code} from {method.upper()} {path}: {body[:300]!r}"
            )
        record("invalid" if response.status_code >= 400 else "ok", response.status_code)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    target = sys.argv.pop(1)
    {"agreements": agreements_target, "bodies": bodies_target}[target]()
