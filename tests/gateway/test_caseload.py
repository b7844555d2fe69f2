"""Caseload sync and the caseload change feed through HTTP: the rules, and ways to break them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from audit.models import AuditEventRow
from gateway.models import (
    Agency,
    Change,
    CohortMembership,
    Management,
    Need,
    Offence,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
)
from policies.identifiers import pnc_check_character

SYNC = "/api/v1/caseload/sync"
FEED = "/api/v1/caseload/changes"
SYNC_PURPOSE = "caseload-sync"
TODAY = datetime.now(UTC).date()
COUNTED = (
    Management,
    Subject,
    SubjectIdentifier,
    Change,
    RiskAssessment,
    Need,
    CohortMembership,
    Offence,
)


def pnc(serial: int, year: int = 19) -> str:
    """A valid PNC id the demo never issues (its serials stay below 1,000,000)."""
    serial += 1_000_000
    return f"{year:02d}/{serial:07d}{pnc_check_character(year, serial)}"


def crn(n: int) -> str:
    return f"Z{n:06d}"  # the demo's CRNs start with D, E or X


def record(local_id: str, n: int | None = None, **changes) -> dict:
    """A well-formed case record for a new person (number n picks their identifiers)."""
    n = n if n is not None else abs(hash(local_id)) % 900_000
    base = {
        "local_case_id": local_id,
        "identifiers": {"pnc": pnc(n), "crn": crn(n)},
        "given_name": "Alex",
        "family_name": "Testperson",
        "date_of_birth": "1990-04-01",
        "area": "BIR",
        "status": "active",
        "statutory": True,
        "offender_manager_ref": "OM-TEST-1",
        "risk": {
            "serious_harm_level": "medium",
            "reoffending_score": 40,
            "assessed_on": (TODAY - timedelta(days=30)).isoformat(),
        },
        "needs": {"ete": "high", "accommodation": "medium"},
        "cohorts": ["SAC"],
    }
    return {**base, **changes}


def sync(
    api,
    agency: str,
    records: list[dict],
    *,
    key: str | None = None,
    purpose: str = SYNC_PURPOSE,
    **options,
):
    headers = {"Idempotency-Key": key} if key else {}
    return api(
        agency, "post", SYNC, purpose=purpose, json={"records": records, **options}, headers=headers
    )


def feed_end(api, agency: str, purpose: str = SYNC_PURPOSE) -> str:
    """A cursor after everything currently in the agency's feed."""
    cursor = None
    while True:
        query = f"?limit=500&since={cursor}" if cursor else "?limit=500"
        page = api(agency, "get", FEED + query, purpose=purpose).get_json()
        if not page["items"]:
            return page["next_cursor"]
        cursor = page["next_cursor"]


def feed_since(api, agency: str, cursor: str, purpose: str = SYNC_PURPOSE) -> list[dict]:
    response = api(agency, "get", f"{FEED}?limit=500&since={cursor}", purpose=purpose)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def counts(db) -> dict[str, int]:
    return {m.__name__: db.scalar(sa.select(sa.func.count()).select_from(m)) for m in COUNTED}


def agency_id(db, code: str) -> int:
    return db.scalar(sa.select(Agency.id).where(Agency.code == code))


def open_cases(db, code: str) -> list[Management]:
    return list(
        db.scalars(
            sa.select(Management)
            .where(Management.agency_id == agency_id(db, code), Management.end_date.is_(None))
            .order_by(Management.id)
        )
    )


def identifiers(db, subject_id: str) -> dict[str, str]:
    rows = db.execute(
        sa.select(SubjectIdentifier.scheme, SubjectIdentifier.value).where(
            SubjectIdentifier.subject_id == subject_id
        )
    ).all()
    return {scheme.lower(): value for scheme, value in rows}


def as_record(db, case: Management, **changes) -> dict:
    """The record a case-management system would send for an existing case."""
    subject = db.get(Subject, case.subject_id)
    return {
        "local_case_id": case.local_case_id,
        "identifiers": identifiers(db, subject.id),
        "given_name": subject.given_name,
        "family_name": subject.family_name,
        "date_of_birth": subject.date_of_birth.isoformat(),
        "area": subject.area_code,
        "status": "active",
        "statutory": case.statutory,
        "offender_manager_ref": case.offender_manager_ref,
        **changes,
    }


def record_for(db, person: Subject, local_id: str, **changes) -> dict:
    """A new case in another agency's system for a person the gateway knows, matched on PNC."""
    return record(
        local_id,
        identifiers={"pnc": identifiers(db, person.id)["pnc"]},
        date_of_birth=person.date_of_birth.isoformat(),
        area=person.area_code,
        **changes,
    )


def managed_only_by(db, code: str) -> Management:
    """An open case of `code` for a person no other agency manages."""
    for case in open_cases(db, code):
        others = db.scalar(
            sa.select(sa.func.count())
            .select_from(Management)
            .where(Management.subject_id == case.subject_id, Management.id != case.id)
        )
        if others == 0:
            return case
    raise AssertionError(f"no subject managed only by {code}")


def last_sync_event(db) -> dict:
    for (body,) in db.execute(sa.select(AuditEventRow.body).order_by(AuditEventRow.id.desc())):
        event = json.loads(body)
        if event["route"] == SYNC:
            return event
    raise AssertionError("no audit event for a sync")


# --- create, update, unchanged, reject -----------------------------------------------------


def test_create_update_unchanged_and_reject_in_one_batch(api, db):
    first = sync(api, "CRC", [record("CRC-T-1", 1), record("CRC-T-2", 2)])
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert [r["result"] for r in body["results"]] == ["created", "created"]
    a_ref, b_ref = (r["subject_ref"] for r in body["results"])
    assert a_ref != b_ref
    assert body["summary"] == {
        "received": 2,
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "ended": 0,
        "transfers_flagged": 0,
    }
    stamp = db.scalar(sa.select(Management.updated_at).where(Management.local_case_id == "CRC-T-1"))
    before = counts(db)

    mixed = [
        record("CRC-T-1", 1),  # same as before
        record("CRC-T-2", 2, offender_manager_ref="OM-TEST-2"),  # changed
        record("CRC-T-3", 3),  # new
        record("CRC-T-4", 4, identifiers={"pnc": pnc(1), "crn": crn(2)}),  # two people
    ]
    response = sync(api, "CRC", mixed)
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert [r["result"] for r in results] == ["unchanged", "updated", "created", "rejected"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[0]["subject_ref"] == a_ref and results[1]["subject_ref"] == b_ref
    rejected = results[3]
    assert rejected["subject_ref"] is None
    assert rejected["problem"]["type"].endswith(":identity-conflict")
    assert rejected["problem"]["conflict"] == "identifiers_disagree"
    assert {"title", "status", "detail"} <= set(rejected["problem"])

    after = counts(db)
    assert after["Management"] == before["Management"] + 1  # only CRC-T-3
    assert after["Subject"] == before["Subject"] + 1
    assert (
        db.scalar(
            sa.select(Management.offender_manager_ref).where(Management.local_case_id == "CRC-T-2")
        )
        == "OM-TEST-2"
    )
    assert (
        db.scalar(sa.select(Management.updated_at).where(Management.local_case_id == "CRC-T-1"))
        == stamp
    )  # untouched
    assert (
        db.scalar(
            sa.select(sa.func.count())
            .select_from(Management)
            .where(Management.local_case_id == "CRC-T-4")
        )
        == 0
    )

    # the audit event names every person touched, counts, and no names or identifiers
    event = last_sync_event(db)
    assert event["decision"] == "permit" and event["resource_type"] == "caseload"
    assert event["agreement"] == "core-iom@3" and event["disclosure_level"] == "identified"
    assert event["grant"] == "caseload-own,caseload-submit"  # created and updated cases
    assert {a_ref, b_ref, results[2]["subject_ref"]} <= set(event["subject_ids"])
    assert event["details"]["created"] == 1 and event["details"]["rejected"] == 1
    assert event["details"]["mode"] == "upsert"
    text = json.dumps(event)
    assert "Testperson" not in text and pnc(1) not in text and "CRC-T-" not in text


def test_an_unchanged_resync_writes_nothing_and_spelling_does_not_matter(api, db):
    original = record("CRC-T-9", 9, identifiers={"pnc": pnc(9), "nomis": "Z1234AB"})
    assert sync(api, "CRC", [original]).status_code == 200
    before = counts(db)
    respelt = {
        **original,
        "identifiers": {"pnc": "20" + pnc(9).lower(), "nomis": " z1234ab "},
        "cohorts": list(reversed(original["cohorts"])),
    }
    again = sync(api, "CRC", [respelt])
    assert again.get_json()["results"][0]["result"] == "unchanged"
    assert counts(db) == before


def test_name_and_date_of_birth_alone_never_link(api, db):
    case = managed_only_by(db, "CRC")
    person = db.get(Subject, case.subject_id)
    twin = record(
        "CRC-T-TWIN",
        77,
        given_name=person.given_name,
        family_name=person.family_name,
        date_of_birth=person.date_of_birth.isoformat(),
        area=person.area_code,
    )
    result = sync(api, "CRC", [twin]).get_json()["results"][0]
    assert result["result"] == "created" and result["subject_ref"] != person.id


def test_a_strong_identifier_links_a_new_case_to_the_known_person(api, db):
    case = managed_only_by(db, "CRC")
    person = db.get(Subject, case.subject_id)
    known = identifiers(db, person.id)
    linked = record(
        "WMP-T-1",
        identifiers={"pnc": known["pnc"], "nomis": "Z9999ZZ"},
        date_of_birth=person.date_of_birth.isoformat(),
        statutory=False,
    )
    result = sync(api, "WMP", [linked]).get_json()["results"][0]
    assert result == {**result, "result": "created", "subject_ref": person.id}
    assert identifiers(db, person.id)["nomis"] == "Z9999ZZ"  # learnt from the case


# --- identity conflicts -------------------------------------------------------------------


def test_identity_conflicts_are_reported_and_not_applied(api, db):
    crc_cases = open_cases(db, "CRC")
    x, y = crc_cases[0], crc_cases[1]
    x_ids, y_ids = identifiers(db, x.subject_id), identifiers(db, y.subject_id)
    x_born = db.get(Subject, x.subject_id).date_of_birth.isoformat()
    before = counts(db)
    batch = [
        # two identifiers of one case pointing at different people
        record(
            "NPS-T-1", identifiers={"pnc": x_ids["pnc"], "crn": y_ids["crn"]}, date_of_birth=x_born
        ),
        # an existing case re-sent with an identifier that belongs to someone else
        as_record(db, x, identifiers={"pnc": y_ids["pnc"]}),
        # a known identifier, a different date of birth: a typo is likelier than a twin
        record("NPS-T-2", identifiers={"crn": x_ids["crn"]}, date_of_birth="1901-01-01"),
        # the person already holds a different number in that scheme
        record("NPS-T-3", identifiers={"crn": x_ids["crn"], "pnc": pnc(55)}, date_of_birth=x_born),
    ]
    response = sync(api, "NPS", batch[:1] + batch[2:])
    assert response.status_code == 200
    conflicts = [r["problem"]["conflict"] for r in response.get_json()["results"]]
    assert conflicts == ["identifiers_disagree", "date_of_birth_differs", "identifier_differs"]
    elsewhere = sync(api, "CRC", [batch[1]]).get_json()["results"][0]
    assert elsewhere["result"] == "rejected"
    assert elsewhere["problem"]["conflict"] == "case_linked_elsewhere"
    assert elsewhere["problem"]["status"] == 409
    assert counts(db) == before
    assert db.get(Management, x.id).subject_id == x.subject_id


def test_other_rejections(api, db):
    before = counts(db)
    yot = sync(api, "YOT-BIR", [record("YOS/T/1", area="BIR")])
    assert yot.status_code == 403  # YOTs hold the scope but no agreement grants caseload sync
    assert yot.content_type == "application/problem+json"
    assert sync(api, "CRC", [record("CRC-T-P")], purpose="iom-case-management").status_code == 403
    assert counts(db) == before
    db.execute(sa.update(Agency).where(Agency.code == "CRC").values(areas=["BIR"]))
    db.commit()
    result = sync(api, "CRC", [record("CRC-T-A", area="COV")]).get_json()["results"][0]
    assert result["result"] == "rejected"
    assert result["problem"]["type"].endswith(":area-not-served")


def test_a_case_never_ends_before_it_starts(api, db):
    """Without its own start_date a record's case starts when it was first synced (a new
    case: today): an earlier end_date is refused, not stored back to front."""
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    closed = dict(status="terminated", statutory=False, end_date=yesterday)
    new = sync(api, "CRC", [record("CRC-END-1", **closed)]).get_json()["results"][0]
    assert new["result"] == "rejected"
    assert new["problem"]["type"].endswith(":end-before-start")
    dated = sync(api, "CRC", [record("CRC-END-1", start_date="2020-01-01", **closed)])
    assert dated.get_json()["results"][0]["result"] == "created"
    earlier = sync(api, "CRC", [record("CRC-END-1", **{**closed, "end_date": "2005-01-01"})])
    assert earlier.get_json()["results"][0]["problem"]["type"].endswith(":end-before-start")
    case = db.scalar(sa.select(Management).where(Management.local_case_id == "CRC-END-1"))
    assert (case.start_date.isoformat(), case.end_date.isoformat()) == ("2020-01-01", yesterday)
    ancient = sync(api, "CRC", [record("CRC-END-2", **{**closed, "end_date": "0001-01-01"})])
    assert ancient.status_code == 422 and ancient.content_type == "application/problem+json"


YOUTH_CASELOAD_AGREEMENT = """
id: test-youth-caseload
version: 1
title: Test - youth offending teams sync their under-18 caseload
parties:
  - {agency: YOT-BIR, role: joint_controller}
  - {agency: WMP, role: joint_controller}
purposes:
  - {code: caseload-sync, description: Who manages whom}
lawful_basis: ["UK GDPR Art 6(1)(e)"]
valid_from: 2015-02-01
valid_until: 2099-12-31
review_by: 2099-01-01
retention: P1Y
grants:
  - id: youth-caseload-submit
    recipients: [YOT-BIR]
    purposes: [caseload-sync]
    resource: caseload
    actions: [create, update]
    conditions: {max_age: 17, areas: [BIR]}
    fields: [local_case_id, subject_ref, status, statutory, risk, needs, cohorts]
    level: identified
"""


def test_grants_with_conditions_are_decided_record_by_record(api, db, load_agreement):
    load_agreement(YOUTH_CASELOAD_AGREEMENT)
    youth = (TODAY - timedelta(days=15 * 365)).isoformat()
    batch = [
        record("YOS/T/1", 801, date_of_birth=youth),
        record("YOS/T/2", 802, date_of_birth="1990-01-01"),
        record("YOS/T/3", 803, date_of_birth=youth, area="COV"),
    ]
    response = sync(api, "YOT-BIR", batch)
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert [r["result"] for r in results] == ["created", "rejected", "rejected"]
    assert results[1]["problem"]["reason"] == "age_not_met"
    assert results[1]["problem"]["status"] == 403
    assert results[2]["problem"]["type"].endswith(":area-not-served")  # YOT-BIR serves BIR
    assert last_sync_event(db)["agreement"] == "test-youth-caseload@1"


# --- atomic batches and idempotent retries ------------------------------------------------


def test_atomic_batch_with_one_bad_record_applies_nothing(api, db):
    taken = identifiers(db, open_cases(db, "CRC")[0].subject_id)
    other = identifiers(db, open_cases(db, "CRC")[1].subject_id)
    batch = [record(f"CRC-T-AT-{i}", 100 + i) for i in range(5)]
    batch.append(record("CRC-T-AT-BAD", identifiers={"pnc": taken["pnc"], "crn": other["crn"]}))
    before = counts(db)
    response = sync(api, "CRC", batch, atomic=True)
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["type"].endswith(":batch-rejected")
    assert [r["local_case_id"] for r in problem["results"]] == ["CRC-T-AT-BAD"]
    assert counts(db) == before
    applied = sync(api, "CRC", batch[:-1], atomic=True)
    assert applied.status_code == 200
    assert counts(db)["Management"] == before["Management"] + 5


def test_idempotent_retry_replays_and_applies_nothing_again(api, db):
    batch = [
        record("CRC-T-ID-1", 201),
        record(
            "CRC-T-ID-2", 202, risk={"serious_harm_level": "high", "assessed_on": TODAY.isoformat()}
        ),
    ]
    first = sync(api, "CRC", batch, key="crc-batch-0001")
    assert first.status_code == 200
    after_first = counts(db)
    again = sync(api, "CRC", batch, key="crc-batch-0001")
    assert again.status_code == 200
    assert again.get_json() == first.get_json()  # created, not "unchanged": the first answer
    assert counts(db) == after_first
    different = sync(api, "CRC", batch[:1], key="crc-batch-0001")
    assert different.status_code == 422
    assert different.get_json()["type"].endswith(":idempotency-key-reused")
    assert counts(db) == after_first
    assert sync(api, "CRC", batch, key="x" * 200).status_code == 400


def test_a_replay_is_refused_once_no_agreement_lets_the_agency_sync(api, expire_agreement):
    """The replayed results name the people behind the agency's cases again."""
    batch = [record("CRC-T-ID-9", 209)]
    assert sync(api, "CRC", batch, key="crc-batch-expiry").status_code == 200
    expire_agreement("core-iom")
    replay = sync(api, "CRC", batch, key="crc-batch-expiry")
    assert replay.status_code == 403 and "results" not in replay.get_json()


# --- snapshots ----------------------------------------------------------------------------


def test_snapshot_guard_refuses_a_truncated_caseload_unless_confirmed(api, db):
    cases = open_cases(db, "CRC")
    assert len(cases) >= 10
    everyone = [as_record(db, c) for c in cases]
    keep = len(cases) * 7 // 10  # 30% missing
    before = counts(db)
    refused = sync(api, "CRC", everyone[:keep], mode="snapshot")
    assert refused.status_code == 409
    assert refused.content_type == "application/problem+json"
    problem = refused.get_json()
    assert problem["type"].endswith(":snapshot-would-end-too-many")
    assert problem["would_end"] == len(cases) - keep and problem["open_cases"] == len(cases)
    assert counts(db) == before
    assert len(open_cases(db, "CRC")) == len(cases)

    confirmed = sync(api, "CRC", everyone[:keep], mode="snapshot", confirm_end=True)
    assert confirmed.status_code == 200, confirmed.get_json()
    body = confirmed.get_json()
    missing = {c.local_case_id for c in cases[keep:]}
    assert set(body["ended"]) == missing and body["summary"]["ended"] == len(missing)
    for case in cases[keep:]:
        db.refresh(case)
        assert (case.status, case.end_date) == ("terminated", TODAY)
    assert len(open_cases(db, "CRC")) == keep


def test_snapshot_within_the_share_applies_without_confirmation(api, db):
    cases = open_cases(db, "CRC")
    everyone = [as_record(db, c) for c in cases]
    response = sync(api, "CRC", everyone[1:], mode="snapshot")  # one case missing: < 20%
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["ended"] == [cases[0].local_case_id]
    # a resend brings the ended case back
    back = sync(api, "CRC", everyone[:1]).get_json()["results"][0]
    assert back["result"] == "updated"
    db.refresh(cases[0])
    assert (cases[0].status, cases[0].end_date) == ("active", None)


# --- allocation: transfers between CRC and NPS --------------------------------------------


def test_crc_to_nps_transfer_is_in_both_feeds_and_back_when_risk_falls(api, db):
    crc_start, nps_start = feed_end(api, "CRC"), feed_end(api, "NPS")
    case = record("CRC-T-TR", 301)
    created = sync(api, "CRC", [case]).get_json()["results"][0]
    assert created["transfer_to"] is None
    subject = created["subject_ref"]

    rising = {
        **case,
        "risk": {
            "serious_harm_level": "high",
            "reoffending_score": 60,
            "assessed_on": TODAY.isoformat(),
        },
    }
    flagged = sync(api, "CRC", [rising]).get_json()
    assert flagged["results"][0]["transfer_to"] == "NPS"
    assert flagged["summary"]["transfers_flagged"] == 1
    assert (
        db.scalar(sa.select(Management.transfer_to).where(Management.local_case_id == "CRC-T-TR"))
        == "NPS"
    )

    crc_items = feed_since(api, "CRC", crc_start)
    nps_items = feed_since(api, "NPS", nps_start)
    for items in (crc_items, nps_items):
        transfers = [i for i in items if i["kind"] == "caseload.transfer_flagged"]
        assert [t["detail"]["flag"] for t in transfers] == ["set"]
        assert transfers[0]["detail"]["from_agency"] == "CRC"
        assert transfers[0]["detail"]["to_agency"] == "NPS"
    mine = next(i for i in crc_items if i["kind"] == "caseload.transfer_flagged")
    assert mine["case"]["local_case_id"] == "CRC-T-TR"
    assert mine["case"]["risk"]["serious_harm_level"] == "high"
    # NPS learns of the flag, but not who: the person is not in its caseload yet
    theirs = next(i for i in nps_items if i["kind"] == "caseload.transfer_flagged")
    assert theirs["case"] is None and theirs["subject"] is None
    assert subject not in json.dumps(nps_items)

    crc_mid, nps_mid = crc_items[-1]["cursor"], nps_items[-1]["cursor"]
    falling = {
        **case,
        "risk": {
            "serious_harm_level": "medium",
            "reoffending_score": 50,
            "assessed_on": (TODAY + timedelta(days=0)).isoformat(),
        },
        "offender_manager_ref": "OM-TEST-9",
    }
    cleared = sync(api, "CRC", [falling]).get_json()["results"][0]
    assert cleared["transfer_to"] is None
    for agency, cursor in (("CRC", crc_mid), ("NPS", nps_mid)):
        items = feed_since(api, agency, cursor)
        assert [(i["kind"], i["detail"]["flag"]) for i in items] == [
            ("caseload.transfer_flagged", "cleared")
        ]


def test_nps_case_whose_risk_falls_is_flagged_to_crc(api, db):
    crc_start = feed_end(api, "CRC")
    low = record(
        "NPS-T-LOW", 302, risk={"serious_harm_level": "low", "assessed_on": TODAY.isoformat()}
    )
    result = sync(api, "NPS", [low]).get_json()["results"][0]
    assert result["transfer_to"] == "CRC"
    items = feed_since(api, "CRC", crc_start)
    assert [(i["kind"], i["detail"]["to_agency"]) for i in items] == [
        ("caseload.transfer_flagged", "CRC")
    ]


# --- the feed: police flags, and nothing outside the caseload -----------------------------


def test_a_police_flag_appears_in_the_crcs_change_feed(api, db):
    case = managed_only_by(db, "CRC")
    person = db.get(Subject, case.subject_id)
    held = set(
        db.scalars(
            sa.select(CohortMembership.cohort).where(CohortMembership.subject_id == person.id)
        )
    )
    new_flag = next(c for c in ("GANG", "HCCU", "PPO", "SAC", "DA") if c not in held)
    start = feed_end(api, "CRC")
    start_iom = feed_end(api, "CRC", purpose="iom-case-management")
    police_case = record_for(
        db,
        person,
        "IOM-T-1",
        statutory=False,
        cohorts=[new_flag],
        risk={"reoffending_score": 88, "assessed_on": TODAY.isoformat()},
        needs={},
    )
    result = sync(api, "WMP", [police_case]).get_json()["results"][0]
    assert (result["result"], result["subject_ref"]) == ("created", person.id)

    items = feed_since(api, "CRC", start)
    [update] = [i for i in items if i["kind"] == "caseload.subject_updated"]
    assert update["detail"]["by"] == "WMP"
    assert {"case_opened", "cohorts", "risk"} <= set(update["detail"]["changed"])
    assert update["case"]["local_case_id"] == case.local_case_id  # the CRC's own id
    assert new_flag in update["case"]["cohorts"]
    assert update["case"]["risk"]["reoffending_score"] == 88
    assert update["subject"] is None  # subjects are released under iom-case-management
    # the same entry under the case-management purpose shows the person instead
    [same] = [
        i
        for i in feed_since(api, "CRC", start_iom, purpose="iom-case-management")
        if i["kind"] == "caseload.subject_updated"
    ]
    assert same["cursor"] == update["cursor"]
    assert same["case"] is None and new_flag in same["subject"]["cohorts"]
    # the police made the change: their own feed does not echo it back
    assert person.id not in json.dumps(feed_since(api, "WMP", start))


def test_nothing_from_outside_the_callers_caseload_appears_in_its_feed(api, db):
    nps_case = managed_only_by(db, "NPS")
    person = db.get(Subject, nps_case.subject_id)
    crc_start, nps_start = feed_end(api, "CRC"), feed_end(api, "NPS")
    flag = record_for(db, person, "IOM-T-2", statutory=False, cohorts=["GANG", "PPO"])
    assert sync(api, "WMP", [flag]).get_json()["results"][0]["subject_ref"] == person.id
    assert [i["kind"] for i in feed_since(api, "NPS", nps_start)] == ["caseload.subject_updated"]
    crc_items = feed_since(api, "CRC", crc_start)
    assert crc_items == []
    # a cursor from the partner feed works here too: one feed, filtered
    referral_feed = api("CRC", "get", "/api/v1/changes", purpose="iom-case-management")
    assert referral_feed.status_code == 200
    assert (
        api(
            "CRC",
            "get",
            f"{FEED}?since={referral_feed.get_json()['next_cursor']}",
            purpose=SYNC_PURPOSE,
        ).status_code
        == 200
    )


def test_feed_refuses_other_purposes_and_forged_cursors(api):
    assert api("CRC", "get", FEED, purpose="pre-cj-referral").status_code == 403
    assert api("CRC", "get", f"{FEED}?since=forged", purpose=SYNC_PURPOSE).status_code == 400
    assert api("CRC", "get", f"{FEED}?limit=0", purpose=SYNC_PURPOSE).status_code == 422
    assert api("VSP-MENTOR", "get", FEED, purpose=SYNC_PURPOSE).status_code == 403  # no scope


def test_a_snapshot_ending_a_shared_case_tells_the_other_manager(api, db):
    person = db.get(Subject, managed_only_by(db, "CRC").subject_id)
    wmp_start = feed_end(api, "WMP")
    police = record_for(db, person, "IOM-T-3", statutory=False, cohorts=[])
    sync(api, "WMP", [police])
    everyone = [as_record(db, c) for c in open_cases(db, "CRC")]
    crc_case = next(c for c in open_cases(db, "CRC") if c.subject_id == person.id)
    rest = [r for r in everyone if r["local_case_id"] != crc_case.local_case_id]
    assert sync(api, "CRC", rest, mode="snapshot").status_code == 200
    items = feed_since(api, "WMP", wmp_start)
    closed = [i for i in items if i["kind"] == "caseload.subject_updated"]
    assert [c["detail"] for c in closed] == [{"by": "CRC", "changed": ["case_closed"]}]


# --- further offences ---------------------------------------------------------------------


def test_offences_are_recorded_once(api, db):
    offences = [
        {"offence_type": "burglary_dwelling", "offence_date": "2025-03-01"},
        {"offence_type": "shoplifting", "offence_date": "2025-04-11"},
    ]
    case = record("CRC-T-OFF", 401, offences=offences)
    assert sync(api, "CRC", [case]).status_code == 200
    changed = {**case, "offender_manager_ref": "OM-TEST-5"}
    assert sync(api, "CRC", [changed]).get_json()["results"][0]["result"] == "updated"
    rows = db.execute(
        sa.select(Offence.source, Offence.source_ref, Offence.offence_type).where(
            Offence.source == "caseload", ~Offence.source_ref.startswith("demo:")
        )
    ).all()
    assert sorted(rows) == [
        ("caseload", "CRC:CRC-T-OFF", "burglary_dwelling"),
        ("caseload", "CRC:CRC-T-OFF", "shoplifting"),
    ]


# --- malformed batches --------------------------------------------------------------------


def _malformed() -> list[tuple[str, object]]:
    good = record("CRC-T-M", 501)
    ok = [record(f"CRC-T-M{i}", 510 + i) for i in range(3)]
    return [
        ("no body", None),
        ("records not a list", {"records": good}),
        ("no records", {"records": []}),
        (
            "1,001 records",
            {
                "records": [
                    {**good, "local_case_id": f"C{i}", "identifiers": {"crn": crn(600_000 + i)}}
                    for i in range(1001)
                ]
            },
        ),
        ("duplicate local ids", {"records": [*ok, {**good, "local_case_id": "CRC-T-M1"}]}),
        ("statutory as text", {"records": [*ok, {**good, "statutory": "yes"}]}),
        (
            "score as text",
            {"records": [*ok, {**good, "risk": {**good["risk"], "reoffending_score": "55"}}]},
        ),
        (
            "unknown harm level",
            {"records": [{**good, "risk": {**good["risk"], "serious_harm_level": "extreme"}}]},
        ),
        ("mode unknown", {"records": ok, "mode": "replace"}),
        ("atomic as text", {"records": ok, "atomic": "true"}),
        ("unknown top-level field", {"records": ok, "colour": "blue"}),
        ("unknown record field", {"records": [*ok, {**good, "nickname": "Al"}]}),
        ("unknown identifier scheme", {"records": [{**good, "identifiers": {"nhs": "123"}}]}),
        ("no identifiers", {"records": [*ok, {**good, "identifiers": {}}]}),
        (
            "bad PNC check letter",
            {
                "records": [
                    *ok,
                    {
                        **good,
                        "identifiers": {
                            "pnc": pnc(501)[:-1] + ("A" if pnc(501)[-1] != "A" else "B")
                        },
                    },
                ]
            },
        ),
        ("bad CRN", {"records": [{**good, "identifiers": {"crn": "12345"}}]}),
        ("bad NOMIS", {"records": [{**good, "identifiers": {"nomis": "AB"}}]}),
        ("date of birth not ISO", {"records": [{**good, "date_of_birth": "01/04/1990"}]}),
        ("impossible date", {"records": [{**good, "date_of_birth": "1990-02-30"}]}),
        ("born in the future", {"records": [{**good, "date_of_birth": "2999-01-01"}]}),
        (
            "assessed in the future",
            {
                "records": [
                    {
                        **good,
                        "risk": {
                            **good["risk"],
                            "assessed_on": (TODAY + timedelta(days=2)).isoformat(),
                        },
                    }
                ]
            },
        ),
        ("end date on an active case", {"records": [{**good, "end_date": "2024-01-01"}]}),
        ("unknown status", {"records": [{**good, "status": "paused"}]}),
        ("unknown pathway", {"records": [{**good, "needs": {"hobbies": "high"}}]}),
        ("unknown cohort", {"records": [{**good, "cohorts": ["ROBBERS"]}]}),
        ("repeated cohort", {"records": [{**good, "cohorts": ["PPO", "PPO"]}]}),
        (
            "unknown offence type",
            {
                "records": [
                    {
                        **good,
                        "offences": [{"offence_type": "jaywalking", "offence_date": "2025-01-01"}],
                    }
                ]
            },
        ),
        ("huge name", {"records": [{**good, "given_name": "A" * 10_000}]}),
        ("unpaired surrogate", {"records": [{**good, "offender_manager_ref": "OM\ud800"}]}),
        ("control character", {"records": [{**good, "family_name": "Smith\nJones"}]}),
        ("huge local id", {"records": [{**good, "local_case_id": "C" * 500}]}),
        ("local id with spaces", {"records": [{**good, "local_case_id": "CRC T 1"}]}),
        ("local id with a trailing newline", {"records": [{**good, "local_case_id": "CRC-T-M\n"}]}),
        ("statutory as 1", {"records": [*ok, {**good, "statutory": 1}]}),
        (
            "score as true",
            {"records": [*ok, {**good, "risk": {**good["risk"], "reoffending_score": True}}]},
        ),
        ("snapshot id not a uuid", {"records": ok, "snapshot_id": "snapshot-1"}),
        ("huge body", {"records": [{**good, "given_name": "A" * 1_100_000}]}),
        ("null record", {"records": [None]}),
        ("area unknown", {"records": [{**good, "area": "LON"}]}),
    ]


@pytest.mark.parametrize(("case", "payload"), _malformed(), ids=[c for c, _ in _malformed()])
def test_malformed_batches_are_refused_whole_and_change_nothing(api, db, case, payload):
    before = counts(db)
    response = api("CRC", "post", SYNC, purpose=SYNC_PURPOSE, json=payload)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.get_json())
    assert response.content_type == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == response.status_code and problem["title"]
    assert counts(db) == before


def test_validation_errors_name_the_record_and_field_without_echoing_values(api):
    good = record("CRC-T-V", 701)
    bad = {**good, "identifiers": {"pnc": "19/1234567A"}, "date_of_birth": "1990-13-01"}
    response = sync(api, "CRC", [good, bad])
    assert response.status_code == 422
    errors = response.get_json()["errors"]["json"]["records"]
    assert set(errors) == {"1"}
    assert set(errors["1"]) == {"identifiers", "date_of_birth"}
    assert "19/1234567A" not in response.get_data(as_text=True)


# --- referral outcomes in the caseload feed -----------------------------------------------


def _ppo_members(db) -> list[str]:
    """People the police may refer under the pre-CJ agreement (PPO cohort members)."""
    return list(
        db.scalars(
            sa.select(CohortMembership.subject_id)
            .where(CohortMembership.cohort == "PPO", CohortMembership.end_date.is_(None))
            .order_by(CohortMembership.subject_id)
        )
    )


def _managed_by(db, subject_id: str, code: str) -> bool:
    return bool(
        db.scalar(
            sa.select(sa.func.count())
            .select_from(Management)
            .where(
                Management.subject_id == subject_id,
                Management.agency_id == agency_id(db, code),
                sa.or_(Management.end_date.is_(None), Management.end_date >= TODAY),
            )
        )
    )


def _refer_and_record_outcome(api, subject_id: str, outcome_type: str) -> tuple[str, str]:
    """The police refer the person to a mentoring provider, which accepts and records an
    outcome; returns (referral id, outcome id)."""
    purpose = "pre-cj-referral"
    created = api(
        "WMP",
        "post",
        "/api/v1/referrals",
        purpose=purpose,
        json={
            "subject_ref": subject_id,
            "to_agency": "VSP-MENTOR",
            "service": "peer_mentoring",
            "pathways": ["ete"],
            "reasons": ["prolific_offending"],
            "summary": "Test referral.",
            "urgency": "routine",
            "consent": {"status": "pending"},
        },
    )
    assert created.status_code == 201, created.get_json()
    referral = created.get_json()["ref"]
    path = f"/api/v1/referrals/{referral}"
    etag = api("VSP-MENTOR", "get", path, purpose=purpose).headers["ETag"]
    accepted = api(
        "VSP-MENTOR", "post", f"{path}/accept", purpose=purpose, json={}, headers={"If-Match": etag}
    )
    assert accepted.status_code == 200, accepted.get_json()
    outcome = api(
        "VSP-MENTOR",
        "post",
        f"{path}/outcomes",
        purpose=purpose,
        json={"type": outcome_type, "occurred_on": TODAY.isoformat()},
    )
    assert outcome.status_code == 201, outcome.get_json()
    return referral, outcome.get_json()["ref"]


def test_a_referral_outcome_appears_in_the_managing_crcs_caseload_feed(api, db):
    person = next(s for s in _ppo_members(db) if not _managed_by(db, s, "CRC"))
    # the CRC takes the person on: its sync links the case to them on their PNC
    taken_on = record_for(db, db.get(Subject, person), "CRC-T-OUT", cohorts=[])
    assert sync(api, "CRC", [taken_on]).get_json()["results"][0]["subject_ref"] == person
    start = feed_end(api, "CRC", purpose="iom-case-management")
    start_sync = feed_end(api, "CRC")
    referral, outcome = _refer_and_record_outcome(api, person, "engagement_started")

    items = feed_since(api, "CRC", start, purpose="iom-case-management")
    [added] = [i for i in items if i["kind"] == "outcome.added"]
    assert added["outcome"]["ref"] == outcome and added["outcome"]["type"] == "engagement_started"
    assert added["outcome"]["referral_ref"] == referral
    assert added["referral"] is None  # the CRC is not a party to the referral
    assert added["detail"] == {"type": "engagement_started"}
    assert added["subject"]["ref"] == person  # whose outcome it is, in its caseload
    # nothing else of the referral's life reaches the CRC: it is not a party
    assert [i["kind"] for i in items] == ["outcome.added"]
    # the caseload-sync purpose has no outcome grant: the entry says nothing
    [withheld] = [i for i in feed_since(api, "CRC", start_sync) if i["kind"] == "outcome.added"]
    assert withheld["outcome"] is None and withheld["detail"] == {}
    assert withheld.get("case") is None and withheld.get("subject") is None
    assert person not in json.dumps(withheld) and outcome not in json.dumps(withheld)


def test_an_outcome_for_someone_outside_the_caseload_is_not_in_the_feed(api, db):
    person = next(s for s in _ppo_members(db) if not _managed_by(db, s, "CRC"))
    start = feed_end(api, "CRC", purpose="iom-case-management")
    _refer_and_record_outcome(api, person, "engagement_started")
    assert feed_since(api, "CRC", start, purpose="iom-case-management") == []


# --- cohort flags ended by sync -----------------------------------------------------------


def _current_cohorts(db, subject_id: str) -> dict[str, set[int | None]]:
    found: dict[str, set[int | None]] = {}
    for cohort, by in db.execute(
        sa.select(CohortMembership.cohort, CohortMembership.set_by_agency_id).where(
            CohortMembership.subject_id == subject_id,
            CohortMembership.start_date <= TODAY,
            sa.or_(CohortMembership.end_date.is_(None), CohortMembership.end_date >= TODAY),
        )
    ):
        found.setdefault(cohort, set()).add(by)
    return found


def test_a_flag_the_agency_no_longer_lists_is_ended_and_others_flags_stay(api, db):
    case = managed_only_by(db, "CRC")
    person = db.get(Subject, case.subject_id)
    before = set(_current_cohorts(db, person.id))  # set outside caseload sync
    police = next(c for c in ("GANG", "HCCU", "PPO", "DA") if c not in before)
    mine = next(c for c in ("GANG", "HCCU", "PPO", "DA") if c not in before | {police})
    crc, wmp = agency_id(db, "CRC"), agency_id(db, "WMP")
    police_case = record_for(db, person, "IOM-T-FLAG", statutory=False, cohorts=[police])
    assert sync(api, "WMP", [police_case]).status_code == 200
    assert sync(api, "CRC", [as_record(db, case, cohorts=[mine])]).status_code == 200
    held = _current_cohorts(db, person.id)
    assert held[police] == {wmp} and held[mine] == {crc}
    start, wmp_start = feed_end(api, "CRC"), feed_end(api, "WMP")

    # the CRC's next record lists none of these: only its own flag ends
    dropped = sync(api, "CRC", [as_record(db, case, cohorts=[])]).get_json()["results"][0]
    assert dropped["result"] == "updated"
    held = _current_cohorts(db, person.id)
    assert mine not in held
    assert held[police] == {wmp}
    assert set(held) == before | {police}
    ended = db.execute(
        sa.select(CohortMembership.end_date, CohortMembership.set_by_agency_id).where(
            CohortMembership.subject_id == person.id, CohortMembership.cohort == mine
        )
    ).all()
    assert ended == [(TODAY - timedelta(days=1), crc)]  # ended, not deleted
    # the police, who also manage the person, see it as a change; the CRC does not echo it
    db.expire_all()  # the test's session outlives requests (each request has its own in use)
    [update] = [
        i for i in feed_since(api, "WMP", wmp_start) if i["kind"] == "caseload.subject_updated"
    ]
    assert update["detail"] == {"by": "CRC", "changed": ["cohorts"]}
    assert mine not in update["case"]["cohorts"] and police in update["case"]["cohorts"]
    assert feed_since(api, "CRC", start) == []

    # resending the same record changes nothing; listing the flag again sets it again
    assert (
        sync(api, "CRC", [as_record(db, case, cohorts=[])]).get_json()["results"][0]["result"]
        == "unchanged"
    )
    assert sync(api, "CRC", [as_record(db, case, cohorts=[mine])]).status_code == 200
    assert _current_cohorts(db, person.id)[mine] == {crc}


def test_a_flag_set_by_another_agency_is_not_ended_by_this_agencys_records(api, db):
    case = managed_only_by(db, "CRC")
    person = db.get(Subject, case.subject_id)
    held_before = _current_cohorts(db, person.id)
    flag = next(c for c in ("GANG", "HCCU", "PPO", "DA") if c not in held_before)
    police_case = record_for(db, person, "IOM-T-FLAG2", statutory=False, cohorts=[flag])
    assert sync(api, "WMP", [police_case]).status_code == 200
    # the CRC lists it too (already set: nothing added), then stops listing it
    assert sync(api, "CRC", [as_record(db, case, cohorts=[flag])]).status_code == 200
    assert sync(api, "CRC", [as_record(db, case, cohorts=[])]).status_code == 200
    held = _current_cohorts(db, person.id)
    assert held[flag] == {agency_id(db, "WMP")}
    assert {c: b for c, b in held.items() if c != flag} == held_before


def _disclosed_cohorts(api, agency: str, subject_id: str) -> list[str]:
    """The person's cohort flags as the subject resource discloses them to `agency`."""
    response = api(agency, "get", f"/api/v1/subjects/{subject_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cohorts"]


def test_a_flag_another_agency_still_lists_stays_when_its_setter_stops_listing_it(api, db):
    case = managed_only_by(db, "CRC")
    person = db.get(Subject, case.subject_id)
    held = _current_cohorts(db, person.id)
    flag = next(c for c in ("GANG", "HCCU", "PPO", "DA") if c not in held)
    police_case = record_for(db, person, "IOM-T-FLAG3", statutory=False, cohorts=[flag])
    crc_record = as_record(db, case, cohorts=[flag])

    def results(agency: str, records: list[dict]) -> list[str]:
        response = sync(api, agency, records)
        assert response.status_code == 200, response.get_json()
        return [r["result"] for r in response.get_json()["results"]]

    assert results("WMP", [police_case]) == ["created"]  # the police set the flag
    assert results("CRC", [crc_record]) == ["updated"]  # the CRC lists it too
    assert _disclosed_cohorts(api, "CRC", person.id).count(flag) == 1  # once, not per lister

    # the police stop listing it: the CRC's case still does, so the person keeps it
    assert results("WMP", [{**police_case, "cohorts": []}]) == ["updated"]
    assert _disclosed_cohorts(api, "CRC", person.id).count(flag) == 1
    assert results("CRC", [crc_record]) == ["unchanged"]
    assert _disclosed_cohorts(api, "CRC", person.id).count(flag) == 1

    # once nobody lists it, it ends
    assert results("CRC", [{**crc_record, "cohorts": []}]) == ["updated"]
    assert flag not in _disclosed_cohorts(api, "CRC", person.id)


def test_a_flag_any_of_the_agencys_cases_lists_stays_whatever_the_batch_order(api, db):
    """Two CRC cases for one person both list GANG; case B stops listing it while case A
    (changed, unchanged or not sent at all) still lists it: the person keeps GANG, the same
    whatever the order of the records, and loses it once A stops listing it too."""
    shapes = ("lists-first", "drops-first", "listing-case-unchanged", "listing-case-not-sent")
    kept, ended = {}, {}
    for n, shape in enumerate(shapes, start=930_001):
        a = record(f"CRC-T-{n}-A", n, cohorts=["GANG"])
        b = record(f"CRC-T-{n}-B", n, cohorts=["GANG"])
        setup = sync(api, "CRC", [a, b]).get_json()["results"]
        assert [r["result"] for r in setup] == ["created", "created"]
        person = setup[0]["subject_ref"]
        assert setup[1]["subject_ref"] == person
        assert _disclosed_cohorts(api, "CRC", person) == ["GANG"]

        changed_a = {**a, "offender_manager_ref": "OM-CHANGED"}
        b_drops = {**b, "cohorts": []}
        batch = {
            "lists-first": [changed_a, b_drops],
            "drops-first": [b_drops, changed_a],
            "listing-case-unchanged": [a, b_drops],
            "listing-case-not-sent": [b_drops],
        }[shape]
        assert sync(api, "CRC", batch).status_code == 200
        kept[shape] = "GANG" in _disclosed_cohorts(api, "CRC", person)

        assert sync(api, "CRC", [{**a, "cohorts": []}]).status_code == 200
        ended[shape] = "GANG" not in _disclosed_cohorts(api, "CRC", person)
    assert kept == dict.fromkeys(shapes, True)
    assert ended == dict.fromkeys(shapes, True)
