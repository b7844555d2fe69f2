"""The auditor's API through HTTP: queries, proofs and exports an outsider can verify."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization

from audit.merkle import verify_consistency, verify_inclusion
from audit.verify import Invalid, verify_receipt
from gateway.sealer import seal_session

AUDIT = "ig-audit"


@pytest.fixture
def seal(app, db):
    """Seal everything pending and sign a checkpoint now (as the sealer worker would)."""

    def run() -> None:
        config = replace(
            app.config["GATEWAY"], audit_checkpoint_every_events=1, audit_gap_grace_seconds=0
        )
        # Ids of the session's rolled-back events are gaps; each call records up to a batch of
        # them and skips them on the next call (grace 0), so call until nothing is left.
        for _ in range(1000):
            result = seal_session(db, config, app.extensions["gateway.keys"])
            if not result.more_pending and result.waiting_for is None:
                break
        db.commit()

    return run


def auditor(api, method, path, **kwargs):
    return api("IG-AUDIT", method, path, purpose=AUDIT, **kwargs)


def public_key(app):
    return app.extensions["gateway.keys"].checkpoint_signing_key().public_key()


def a_subject_read_by_police(api) -> str:
    ref = api("WMP", "get", "/api/v1/subjects?limit=1").get_json()["items"][0]["ref"]
    assert (
        api(
            "WMP", "get", f"/api/v1/subjects/{ref}", headers={"X-On-Behalf-Of": "DC 4471"}
        ).status_code
        == 200
    )
    return ref


def test_only_the_ig_audit_team_reads_the_log(api):
    for agency, purpose in (("WMP", "iom-case-management"), ("VSP-MENTOR", "pre-cj-referral")):
        response = api(agency, "get", "/api/v1/audit/events", purpose=purpose)
        assert response.status_code == 403
        assert response.content_type == "application/problem+json"


def test_auditor_filters_events_and_pages_through_them(api):
    subject = a_subject_read_by_police(api)
    found = auditor(
        api, "get", f"/api/v1/audit/events?agency=WMP&subject={subject}&action=read"
    ).get_json()
    assert found["items"]
    event = found["items"][-1]["event"]
    assert event["subject_ids"] == [subject]
    assert event["on_behalf_of"] == "DC 4471"
    assert event["agreement"].startswith("core-iom@")
    assert event["purpose"] == "iom-case-management" and event["decision"] == "permit"
    assert "given_name" in event["fields"]
    raw = json.dumps(found)
    assert 'family_name":' not in raw  # field names yes, values never: no personal data

    first = auditor(api, "get", "/api/v1/audit/events?limit=2").get_json()
    second = auditor(
        api, "get", f"/api/v1/audit/events?limit=2&cursor={first['next_cursor']}"
    ).get_json()
    assert {json.dumps(i) for i in first["items"]}.isdisjoint(
        {json.dumps(i) for i in second["items"]}
    )
    assert auditor(api, "get", "/api/v1/audit/events?decision=maybe").status_code == 422


def test_subject_filter_finds_every_spelling_of_the_id(api):
    """An empty page for an upper-case or unhyphenated id would read as "nobody saw them"."""
    subject = a_subject_read_by_police(api)
    as_stored = auditor(api, "get", f"/api/v1/audit/events?subject={subject}").get_json()
    assert as_stored["items"]
    for spelling in (subject.upper(), subject.replace("-", ""), "{" + subject + "}"):
        found = auditor(api, "get", f"/api/v1/audit/events?subject={spelling}").get_json()
        assert found == as_stored, spelling
    refused = auditor(api, "get", "/api/v1/audit/events?subject=not-a-person")
    assert refused.status_code == 422 and refused.content_type == "application/problem+json"


def test_subject_access_request_answer(api):
    subject = a_subject_read_by_police(api)
    answer = auditor(api, "get", f"/api/v1/audit/subjects/{subject}/accesses").get_json()
    rows = {(a["agency"], a["purpose"]) for a in answer["accesses"]}
    assert ("WMP", "iom-case-management") in rows
    assert all(a["first_access"] <= a["last_access"] for a in answer["accesses"])


def test_inclusion_proof_receipt_and_consistency_verify(api, app, seal):
    a_subject_read_by_police(api)
    seal()
    first = auditor(api, "get", "/api/v1/audit/checkpoints/latest").get_json()
    a_subject_read_by_police(api)
    for _ in range(4):  # checkpoint timestamps are whole seconds and strictly increase
        time.sleep(1.05)
        seal()
        latest = auditor(api, "get", "/api/v1/audit/checkpoints/latest").get_json()
        if latest["tree_size"] > first["tree_size"]:
            break
    assert latest["tree_size"] > first["tree_size"]

    seq = first["tree_size"] - 1
    proven = auditor(api, "get", f"/api/v1/audit/events/{seq}").get_json()
    assert verify_inclusion(
        seq,
        proven["tree_size"],
        bytes.fromhex(proven["leaf_hash"]),
        [bytes.fromhex(p) for p in proven["inclusion_proof"]],
        bytes.fromhex(latest["root_hash"]),
    )

    receipt = auditor(api, "get", f"/api/v1/audit/events/{seq}/receipt").get_json()
    verify_receipt(receipt, public_key(app))  # raises Invalid when it does not hold
    receipt["event"]["agency"] = "NPS"
    with pytest.raises(Invalid):
        verify_receipt(receipt, public_key(app))

    proof = auditor(
        api,
        "get",
        f"/api/v1/audit/consistency?from_size={first['tree_size']}&to_size={latest['tree_size']}",
    ).get_json()["proof"]
    assert verify_consistency(
        first["tree_size"],
        latest["tree_size"],
        bytes.fromhex(first["root_hash"]),
        bytes.fromhex(latest["root_hash"]),
        [bytes.fromhex(p) for p in proof],
    )
    assert auditor(api, "get", "/api/v1/audit/consistency?from_size=5&to_size=2").status_code == 422
    assert (
        auditor(api, "get", "/api/v1/audit/consistency?from_size=1&to_size=99999999").status_code
        == 422
    )


def test_cli_export_comes_with_a_checkpoint_it_covers(api, app, seal, tmp_path, monkeypatch):
    """The sealer may commit between writing the export and reading the checkpoint; one
    covering events the export lacks would fail verification of an untouched log."""
    import gateway.sealer
    from audit.verify import main as verify_main

    a_subject_read_by_police(api)
    seal()
    write_export = gateway.sealer.write_export

    def sealer_commits_after_export(session, out, from_seq=0, to_seq=None):
        count = write_export(session, out, from_seq, to_seq)
        a_subject_read_by_police(api)
        time.sleep(1.05)  # checkpoint timestamps are whole seconds and strictly increase
        seal()
        return count

    monkeypatch.setattr(gateway.sealer, "write_export", sealer_commits_after_export)
    out = tmp_path / "export.jsonl"
    gateway.sealer.export_to_files(app, 0, out)
    checkpoint, key = out.with_suffix(".checkpoint.json"), out.with_suffix(".pub.pem")
    assert verify_main(["--events", str(out), "--checkpoint", str(checkpoint),
                        "--public-key", str(key)]) == 0


def test_the_log_verifies_across_a_new_checkpoint_key(api, app, seal, monkeypatch):
    """Checkpoints signed before a new key version was added still verify, by the old key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.sealer import verify_log

    a_subject_read_by_police(api)
    seal()
    keys = app.extensions["gateway.keys"]
    monkeypatch.setitem(
        keys.checkpoint_keys, keys.checkpoint_key_version + 1, Ed25519PrivateKey.generate()
    )
    a_subject_read_by_police(api)
    time.sleep(1.05)  # checkpoint timestamps are whole seconds and strictly increase
    seal()
    names = {c.note.splitlines()[-1].split()[1] for c in _checkpoints(app)}
    assert len(names) == 2  # signed by both keys
    report = verify_log(app)
    assert report.ok, report.problems


def _checkpoints(app):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from audit.models import AuditCheckpoint

    return app.extensions["gateway.db"].session.scalars(sa.select(AuditCheckpoint)).all()


def test_the_sealer_thread_survives_an_unexpected_error(app, monkeypatch, caplog):
    """An escaped exception would end the thread, and sealing, while the gateway serves on."""
    import threading

    import gateway.sealer

    rounds: list[int] = []
    stop = threading.Event()

    def seal_until_idle(database, config, keys):  # type: ignore[no-untyped-def]
        rounds.append(1)
        if len(rounds) == 1:
            raise KeyError("a bug")
        stop.set()
        return 0

    monkeypatch.setattr(gateway.sealer, "seal_until_idle", seal_until_idle)
    gateway.sealer.run_sealer_loop(app, interval=0, stop=stop)
    assert len(rounds) == 2  # it went on after the error
    assert "sealing failed unexpectedly: KeyError" in caplog.text


def test_a_stalled_export_reader_holds_no_lock(tmp_path):
    """The export streams after its request's audit event is committed; a client that stops
    reading must not keep SQLite's write lock, which every other request needs to write its
    own audit event (they would all wait, then fail)."""
    import sqlite3

    from flask import Flask
    from sqlalchemy.orm import Session

    from audit.models import AuditBase
    from gateway.api.audit import _exported
    from gateway.db import Database
    from tests.audit.helpers import record_many, seal_all

    path = tmp_path / "log.db"
    database = Database(f"sqlite:///{path}")
    AuditBase.metadata.create_all(database.engine)
    with Session(database.engine) as session:
        record_many(session, 5)
        seal_all(session)
        session.commit()
    app = Flask(__name__)
    app.extensions["gateway.db"] = database
    with app.test_request_context():
        stream = _exported("jsonl", 0)
        assert json.loads(next(stream))["seq"] == 0  # read one line, then stall
        writer = sqlite3.connect(path, timeout=0, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # raises "database is locked" while one is held
        writer.execute("ROLLBACK")
        writer.close()
        assert len(list(stream)) == 4
    database.engine.dispose()


def test_export_verifies_offline_and_tampering_is_located(api, app, seal, tmp_path):
    a_subject_read_by_police(api)
    seal()
    checkpoint = auditor(api, "get", "/api/v1/audit/checkpoints/latest").get_json()
    export = auditor(api, "get", "/api/v1/audit/export?format=jsonl")
    assert export.status_code == 200 and export.mimetype == "application/jsonl"
    lines = export.get_data(as_text=True).splitlines()
    assert len(lines) >= checkpoint["tree_size"]

    (tmp_path / "checkpoint.json").write_text(json.dumps({"note": checkpoint["note"]}))
    (tmp_path / "key.pem").write_bytes(
        public_key(app).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    def verify(events: list[str]) -> subprocess.CompletedProcess:
        (tmp_path / "events.jsonl").write_text("\n".join(events) + "\n")
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "audit.verify",
                "--events",
                str(tmp_path / "events.jsonl"),
                "--checkpoint",
                str(tmp_path / "checkpoint.json"),
                "--public-key",
                str(tmp_path / "key.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    assert verify(lines).returncode == 0
    tampered = json.loads(lines[3])
    tampered["event"]["purpose"] = "something-else"
    result = verify([*lines[:3], json.dumps(tampered), *lines[4:]])
    assert result.returncode == 1 and "3" in result.stdout + result.stderr

    resumed = auditor(api, "get", "/api/v1/audit/export?format=jsonl&from_seq=2").get_data(
        as_text=True
    )
    assert resumed.splitlines()[0] == lines[2]
    csv_text = auditor(api, "get", "/api/v1/audit/export?format=csv").get_data(as_text=True)
    assert csv_text.splitlines()[0].startswith("seq,leaf_hash,time,kind")
    assert auditor(api, "get", "/api/v1/audit/export?format=xml").status_code == 422


def test_audit_queries_are_themselves_audited(api):
    auditor(api, "get", "/api/v1/audit/events?limit=1")
    latest = auditor(api, "get", "/api/v1/audit/events?agency=IG-AUDIT&limit=200").get_json()[
        "items"
    ]
    assert any(i["event"]["route"] == "/api/v1/audit/events" for i in latest)


def test_audit_tables_refuse_update_and_delete_on_postgresql(world, app, db):
    import sqlalchemy as sa
    from sqlalchemy.exc import DBAPIError

    if world.backend != "postgresql":
        pytest.skip("the append-only trigger is PostgreSQL's")
    for statement in ("UPDATE audit_events SET agency = 'X'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
            db.execute(sa.text(statement))
