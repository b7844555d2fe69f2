"""Listings, proofs, receipts, subject access summaries and exports."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit import query
from audit.events import EventKind, canonical_json, leaf_hash
from audit.merkle import verify_consistency, verify_inclusion
from audit.record import record_event
from audit.verify import verify_receipt
from tests.audit.helpers import PUBLIC_KEY, SUBJECTS, T0, make_event, record_many, seal_all


def test_list_events_filters_and_pages(audit_session: Session) -> None:
    record_many(audit_session, 12)
    seal_all(audit_session)
    record_event(audit_session, make_event(12, decision="deny", status=403))  # unsealed
    everything = query.list_events(audit_session, None, limit=100)
    assert len(everything) == 13
    assert [e["seq"] for e in everything] == [*range(12), None]
    assert everything[0]["event_id"] == make_event(0).event_id
    assert set(everything[0]) >= {"row_id", "seq", "kind", "time", "subject_ids", "details"}

    def ids(**filters) -> list[str]:
        return [e["request_id"] for e in query.list_events(audit_session, filters, limit=100)]

    assert ids(agency="WMP") == ["req-0", "req-3", "req-6", "req-9", "req-12"]
    assert ids(agency="WMP", decision="deny") == ["req-12"]
    assert ids(client_id="client-1", purpose="safeguarding") == ["req-1", "req-7"]
    assert ids(subject_id=SUBJECTS[4]) == ["req-4"]
    assert ids(time_from=T0 + timedelta(seconds=10)) == ["req-10", "req-11", "req-12"]
    assert ids(time_to=T0 + timedelta(seconds=2)) == ["req-0", "req-1"]
    assert ids(agreement="core-iom@3", action="read", kind="api.access")[:1] == ["req-0"]
    assert ids(kind=EventKind.TOKEN_ISSUED) == []
    # Keyset pagination by row id.
    seen, after = [], None
    while page := query.list_events(audit_session, {"agency": "PROBATION"}, after, limit=2):
        seen += [e["request_id"] for e in page]
        after = page[-1]["row_id"]
    assert seen == ["req-1", "req-4", "req-7", "req-10"]
    with pytest.raises(ValueError, match="unknown"):
        query.list_events(audit_session, {"colour": "red"})


def test_get_event_and_proofs(audit_session: Session) -> None:
    events = record_many(audit_session, 37)
    result = seal_all(audit_session)
    checkpoint = query.latest_checkpoint(audit_session)
    assert checkpoint == result.checkpoint and checkpoint.tree_size == 37
    for seq in (0, 17, 36):
        found = query.get_event(audit_session, seq)
        assert found["seq"] == seq and found["event_id"] == events[seq].event_id
        body = {k: v for k, v in found.items() if k not in ("row_id", "seq", "leaf_hash")}
        leaf = leaf_hash(canonical_json(body))
        assert found["leaf_hash"] == leaf.hex()
        for size in (seq + 1, 37):
            proof = query.inclusion_proof(audit_session, seq, size)
            root = query.checkpoint_at(audit_session, 37).root_hash if size == 37 else None
            if root is not None:
                assert verify_inclusion(seq, size, leaf, proof, root)
    assert query.get_event(audit_session, 37) is None
    old = query.checkpoint_at(audit_session, 37)
    assert old is not None and query.checkpoint_at(audit_session, 36) is None
    with pytest.raises(ValueError):
        query.inclusion_proof(audit_session, 3, 38)
    with pytest.raises(ValueError):
        query.consistency_proof(audit_session, 3, 38)
    record_many(audit_session, 5, start=37)
    seal_all(audit_session, T0 + timedelta(minutes=5))
    new = query.latest_checkpoint(audit_session)
    proof = query.consistency_proof(audit_session, 37, 42)
    assert verify_consistency(37, 42, old.root_hash, new.root_hash, proof)


def test_receipt_is_self_contained(audit_session: Session) -> None:
    record_many(audit_session, 9)
    seal_all(audit_session)
    receipt = query.receipt(audit_session, 4)
    assert receipt is not None
    text = json.dumps(receipt)  # plain JSON, nothing else needed but the public key
    assert verify_receipt(json.loads(text), PUBLIC_KEY).message.startswith("seq 4 is included")
    assert query.receipt(audit_session, 99) is None
    record_many(audit_session, 1, start=9)
    from tests.audit.helpers import seal

    seal(audit_session, T0, checkpoint_every_events=10**6, checkpoint_every_seconds=10**6)
    assert query.get_event(audit_session, 9) is not None
    with pytest.raises(query.NotCheckpointedYet):
        query.receipt(audit_session, 9)


def test_subject_accesses_groups(audit_session: Session) -> None:
    subject = SUBJECTS[0]
    for i, (agency, purpose, decision) in enumerate([
        ("WMP", "iom-case-management", "permit"),
        ("WMP", "iom-case-management", "permit"),
        ("WMP", "safeguarding", "permit"),
        ("NACRO", "iom-case-management", "permit"),
        ("NACRO", "iom-case-management", "deny"),
    ]):
        record_event(audit_session, make_event(
            100 + i, agency=agency, purpose=purpose, decision=decision,
            subject_ids=[subject, SUBJECTS[1]], time=T0 + timedelta(minutes=i)))
    record_event(audit_session, make_event(200, subject_ids=[SUBJECTS[2]]))
    rows = query.subject_accesses(audit_session, subject)
    assert rows == [
        {"agency": "NACRO", "purpose": "iom-case-management", "agreement": "core-iom@3",
         "first_access": T0 + timedelta(minutes=3), "last_access": T0 + timedelta(minutes=3),
         "count": 1},
        {"agency": "WMP", "purpose": "safeguarding", "agreement": "core-iom@3",
         "first_access": T0 + timedelta(minutes=2), "last_access": T0 + timedelta(minutes=2),
         "count": 1},
        {"agency": "WMP", "purpose": "iom-case-management", "agreement": "core-iom@3",
         "first_access": T0, "last_access": T0 + timedelta(minutes=1), "count": 2},
    ]
    assert rows[0]["first_access"].tzinfo is not None
    with_denied = query.subject_accesses(audit_session, subject, include_denied=True)
    assert sum(r["count"] for r in with_denied) == 5
    assert query.subject_accesses(audit_session, SUBJECTS[9]) == []


def test_subject_lookup_uses_the_index(audit_session: Session) -> None:
    statement = query.subject_accesses_query(SUBJECTS[0])
    dialect = audit_session.get_bind().dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    if dialect.name == "sqlite":
        plan = audit_session.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}")).all()
    else:
        audit_session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = audit_session.execute(sa.text(f"EXPLAIN {sql}")).all()
    assert "ix_audit_event_subjects_subject" in " ".join(str(row) for row in plan)


def test_export_streams_in_seq_order(audit_session: Session) -> None:
    record_many(audit_session, 23)
    seal_all(audit_session)
    record_many(audit_session, 2, start=23)  # unsealed: not exported
    lines = list(query.export_events(audit_session, chunk_size=5))
    assert [line["seq"] for line in lines] == list(range(23))
    for line in lines:
        assert line["leaf_hash"] == leaf_hash(canonical_json(line["event"])).hex()
    assert [x["seq"] for x in query.export_events(audit_session, 20, chunk_size=2)] == [20, 21, 22]
    assert [x["seq"] for x in query.export_events(audit_session, 3, 6)] == [3, 4, 5]
    out = io.StringIO()
    assert query.write_export(audit_session, out) == 23
    assert [json.loads(x)["seq"] for x in out.getvalue().splitlines()] == list(range(23))
