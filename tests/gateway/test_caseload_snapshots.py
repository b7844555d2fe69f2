"""Caseload snapshots sent in many batches, through HTTP: open, send batches, complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from gateway.models import CaseloadSnapshot, CaseloadSnapshotCase, Management
from tests.gateway.test_caseload import (
    SYNC_PURPOSE,
    TODAY,
    as_record,
    counts,
    feed_end,
    feed_since,
    open_cases,
    record,
    sync,
)

SNAPSHOTS = "/api/v1/caseload/snapshots"
NOBODY = "00000000-0000-4000-8000-000000000000"


def open_snapshot(api, agency: str = "CRC") -> str:
    response = api(agency, "post", SNAPSHOTS, purpose=SYNC_PURPOSE, json={})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "open" and body["batches"] == 0 and body["cases_seen"] == 0
    return body["ref"]


def snapshot(api, snapshot_id: str, agency: str = "CRC"):
    return api(agency, "get", f"{SNAPSHOTS}/{snapshot_id}", purpose=SYNC_PURPOSE)


def complete(api, snapshot_id: str, agency: str = "CRC", **options):
    return api(
        agency,
        "post",
        f"{SNAPSHOTS}/{snapshot_id}/complete",
        purpose=SYNC_PURPOSE,
        json=options,
    )


def without_request_id(response) -> dict:
    return {k: v for k, v in response.get_json().items() if k != "request_id"}


def status_of(db, local_id: str) -> tuple[str, object]:
    return db.execute(
        sa.select(Management.status, Management.end_date).where(
            Management.local_case_id == local_id
        )
    ).one()


def test_a_snapshot_in_three_batches_ends_exactly_the_missing_cases(api, db):
    demo = [as_record(db, c) for c in open_cases(db, "CRC")]
    new = [record(f"CRC-S-{i}", 20_000 + i) for i in range(2_620 - len(demo))]
    for start in range(0, len(new), 1000):
        seeded = sync(api, "CRC", new[start : start + 1000])
        assert seeded.status_code == 200 and seeded.get_json()["summary"]["rejected"] == 0
    missing_new = {r["local_case_id"] for r in new[::20][:118]}
    missing = missing_new | {demo[0]["local_case_id"], demo[-1]["local_case_id"]}
    sent = [r for r in demo + new if r["local_case_id"] not in missing]
    assert len(sent) == 2_500
    sent = sent[1::2] + sent[::2]  # the batches need not follow any order
    open_before = len(open_cases(db, "CRC"))
    snapshot_id = open_snapshot(api)

    for start in range(0, len(sent), 1000):
        batch = sync(api, "CRC", sent[start : start + 1000], snapshot_id=snapshot_id)
        assert batch.status_code == 200, batch.get_json()
        body = batch.get_json()
        assert body["snapshot_id"] == snapshot_id and body["ended"] == []
        assert body["summary"]["rejected"] == 0
    progress = snapshot(api, snapshot_id).get_json()
    assert (progress["status"], progress["batches"], progress["cases_seen"]) == ("open", 3, 2_500)
    assert len(open_cases(db, "CRC")) == open_before  # nothing ended before completion

    done = complete(api, snapshot_id)
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert body["status"] == "completed" and body["closed_at"]
    assert sorted(body["ended"]) == sorted(missing)
    assert body["open_cases"] == open_before and body["cases_seen"] == 2_500
    for local_id in missing:
        assert status_of(db, local_id) == ("terminated", TODAY)
    still_open = {c.local_case_id for c in open_cases(db, "CRC")}
    assert still_open == {r["local_case_id"] for r in sent}
    # the seen ids are not kept once the snapshot is closed
    assert not db.scalar(
        sa.select(sa.func.count())
        .select_from(CaseloadSnapshotCase)
        .where(CaseloadSnapshotCase.snapshot_id == snapshot_id)
    )

    # completing again is safe: the same answer, nothing more ended
    before = counts(db)
    again = complete(api, snapshot_id, confirm_end=True)
    assert again.status_code == 200 and again.get_json() == body
    assert counts(db) == before
    # and a completed snapshot takes no more batches
    late = sync(api, "CRC", sent[:1], snapshot_id=snapshot_id)
    assert late.status_code == 409 and late.get_json()["type"].endswith(":snapshot-closed")


def test_the_guard_applies_at_completion_and_leaves_the_snapshot_open(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    keep = len(everyone) * 6 // 10
    wmp_start = feed_end(api, "WMP")
    snapshot_id = open_snapshot(api)
    assert sync(api, "CRC", everyone[:keep], snapshot_id=snapshot_id).status_code == 200
    before = counts(db)

    refused = complete(api, snapshot_id)
    assert refused.status_code == 409
    assert refused.content_type == "application/problem+json"
    problem = refused.get_json()
    assert problem["type"].endswith(":snapshot-would-end-too-many")
    assert problem["would_end"] == len(cases) - keep and problem["open_cases"] == len(cases)
    assert f"would end {len(cases) - keep} of your {len(cases)}" in problem["detail"]
    assert counts(db) == before
    assert snapshot(api, snapshot_id).get_json()["status"] == "open"

    # the missing batch arrives; one case really has gone: within the share, no confirmation
    assert sync(api, "CRC", everyone[keep:-1], snapshot_id=snapshot_id).status_code == 200
    done = complete(api, snapshot_id)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["ended"] == [cases[-1].local_case_id]
    assert status_of(db, cases[-1].local_case_id) == ("terminated", TODAY)
    # the same ending as a one-batch snapshot: other managers of the person are told
    shared = db.scalar(
        sa.select(sa.func.count())
        .select_from(Management)
        .where(
            Management.subject_id == cases[-1].subject_id,
            Management.id != cases[-1].id,
            sa.or_(Management.end_date.is_(None), Management.end_date >= TODAY),
        )
    )
    items = feed_since(api, "WMP", wmp_start)
    closed = [i for i in items if i["kind"] == "caseload.subject_updated"]
    assert len(closed) == (1 if shared else 0)


def test_confirm_end_lets_a_shrunken_caseload_complete(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    snapshot_id = open_snapshot(api)
    assert sync(api, "CRC", everyone[:2], snapshot_id=snapshot_id).status_code == 200
    done = complete(api, snapshot_id, confirm_end=True)
    assert done.status_code == 200
    assert sorted(done.get_json()["ended"]) == sorted(c.local_case_id for c in cases[2:])
    assert [c.local_case_id for c in open_cases(db, "CRC")] == [c.local_case_id for c in cases[:2]]


def test_a_snapshot_belongs_to_one_agency(api, db):
    snapshot_id = open_snapshot(api, "CRC")
    unknown = snapshot(api, NOBODY, "NPS")
    assert unknown.status_code == 404
    assert unknown.content_type == "application/problem+json"
    before = counts(db)
    theirs = [
        snapshot(api, snapshot_id, "NPS"),
        complete(api, snapshot_id, "NPS", confirm_end=True),
        api("NPS", "delete", f"{SNAPSHOTS}/{snapshot_id}", purpose=SYNC_PURPOSE),
        sync(api, "NPS", [record("NPS-S-1", 31_000)], snapshot_id=snapshot_id),
    ]
    for response in theirs:
        assert response.status_code == 404, response.get_json()
        assert without_request_id(response) == without_request_id(unknown)  # indistinguishable
    assert counts(db) == before
    assert snapshot(api, snapshot_id, "CRC").get_json()["status"] == "open"
    assert api("VSP-MENTOR", "post", SNAPSHOTS, purpose=SYNC_PURPOSE, json={}).status_code == 403
    assert api("YOT-BIR", "post", SNAPSHOTS, purpose=SYNC_PURPOSE, json={}).status_code == 403
    assert api("CRC", "post", SNAPSHOTS, purpose="iom-case-management", json={}).status_code == 403
    assert snapshot(api, "not-a-uuid").status_code == 404


def test_a_batch_retried_with_its_idempotency_key_counts_once(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    snapshot_id = open_snapshot(api)
    first = sync(api, "CRC", everyone[:-1], snapshot_id=snapshot_id, key="snap-batch-1")
    assert first.status_code == 200
    after_first = counts(db)
    again = sync(api, "CRC", everyone[:-1], snapshot_id=snapshot_id, key="snap-batch-1")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert counts(db) == after_first
    progress = snapshot(api, snapshot_id).get_json()
    assert (progress["batches"], progress["cases_seen"]) == (1, len(cases) - 1)
    # the same records sent again without the key: one more batch, no more cases seen
    assert sync(api, "CRC", everyone[:3], snapshot_id=snapshot_id).status_code == 200
    progress = snapshot(api, snapshot_id).get_json()
    assert (progress["batches"], progress["cases_seen"]) == (2, len(cases) - 1)
    # the key with another snapshot id is another request
    reused = sync(api, "CRC", everyone[:-1], snapshot_id=NOBODY, key="snap-batch-1")
    assert reused.status_code == 422
    assert complete(api, snapshot_id).get_json()["ended"] == [cases[-1].local_case_id]


def test_a_refused_batch_is_not_seen(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    taken = everyone[0]["identifiers"]
    snapshot_id = open_snapshot(api)
    bad = record("CRC-S-BAD", identifiers={"pnc": taken["pnc"], "crn": "Z999999"})
    refused = sync(api, "CRC", [*everyone[1:], bad], snapshot_id=snapshot_id, atomic=True)
    assert refused.status_code == 422
    progress = snapshot(api, snapshot_id).get_json()
    assert (progress["batches"], progress["cases_seen"]) == (0, 0)
    # a record rejected in a batch that is applied still counts: its case is not gone
    applied = sync(api, "CRC", [*everyone[1:], bad], snapshot_id=snapshot_id)
    assert applied.get_json()["summary"]["rejected"] == 1
    assert snapshot(api, snapshot_id).get_json()["cases_seen"] == len(cases)


def test_completing_an_empty_or_unknown_snapshot(api, db):
    before = counts(db)
    unknown = complete(api, NOBODY, confirm_end=True)
    assert unknown.status_code == 404
    assert unknown.get_json()["type"].endswith(":snapshot-not-found")
    snapshot_id = open_snapshot(api)
    empty = complete(api, snapshot_id, confirm_end=True)
    assert empty.status_code == 422
    assert empty.get_json()["type"].endswith(":snapshot-empty")
    assert counts(db) == before
    assert snapshot(api, snapshot_id).get_json()["status"] == "open"
    bad_option = complete(api, snapshot_id, confirm_end="yes")
    assert bad_option.status_code == 422
    no_body = api("CRC", "post", f"{SNAPSHOTS}/{snapshot_id}/complete", purpose=SYNC_PURPOSE)
    assert no_body.status_code == 415  # a JSON body, as every POST here
    unknown_option = api("CRC", "post", SNAPSHOTS, purpose=SYNC_PURPOSE, json={"mode": "snapshot"})
    assert unknown_option.status_code == 422


def test_abandoned_superseded_and_expired_snapshots_end_nothing(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    first = open_snapshot(api)
    assert sync(api, "CRC", everyone[:1], snapshot_id=first).status_code == 200
    second = open_snapshot(api)  # opening another abandons the first
    assert snapshot(api, first).get_json()["status"] == "abandoned"
    stale = sync(api, "CRC", everyone[1:2], snapshot_id=first)
    assert stale.status_code == 409
    assert stale.get_json()["snapshot_status"] == "abandoned"
    assert complete(api, first, confirm_end=True).status_code == 409

    assert sync(api, "CRC", everyone[:1], snapshot_id=second).status_code == 200
    dropped = api("CRC", "delete", f"{SNAPSHOTS}/{second}", purpose=SYNC_PURPOSE)
    assert dropped.status_code == 200 and dropped.get_json()["status"] == "abandoned"
    assert complete(api, second, confirm_end=True).status_code == 409

    third = open_snapshot(api)
    assert sync(api, "CRC", everyone[:1], snapshot_id=third).status_code == 200
    db.execute(
        sa.update(CaseloadSnapshot)
        .where(CaseloadSnapshot.id == third)
        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    db.commit()
    assert snapshot(api, third).get_json()["status"] == "expired"
    expired = sync(api, "CRC", everyone[1:2], snapshot_id=third)
    assert expired.status_code == 409 and expired.get_json()["snapshot_status"] == "expired"
    assert complete(api, third, confirm_end=True).status_code == 409
    assert [c.id for c in open_cases(db, "CRC")] == [c.id for c in cases]


def test_untagged_batches_during_a_snapshot_count_as_seen(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    snapshot_id = open_snapshot(api)
    assert sync(api, "CRC", everyone[1:], snapshot_id=snapshot_id).status_code == 200
    late_case = record("CRC-S-LATE", 32_000)
    assert sync(api, "CRC", [late_case]).status_code == 200  # a new case, sent on its own
    assert sync(api, "NPS", [record("NPS-S-2", 32_001)]).status_code == 200  # another agency
    done = complete(api, snapshot_id).get_json()
    assert done["ended"] == [cases[0].local_case_id]
    assert status_of(db, "CRC-S-LATE") == ("active", None)
    assert status_of(db, "NPS-S-2") == ("active", None)


def test_a_batch_is_either_a_one_batch_snapshot_or_part_of_a_session(api, db):
    everyone = [as_record(db, c) for c in open_cases(db, "CRC")]
    snapshot_id = open_snapshot(api)
    both = sync(api, "CRC", everyone, snapshot_id=snapshot_id, mode="snapshot")
    assert both.status_code == 422
    assert sync(api, "CRC", everyone, snapshot_id="not-a-uuid").status_code == 422
    assert sync(api, "CRC", everyone, snapshot_id=None).status_code == 422
