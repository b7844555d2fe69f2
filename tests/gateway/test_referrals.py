"""Referrals and outcomes through HTTP: the whole story, and every way to get it wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from gateway.models import CohortMembership, Referral, Subject, VictimLink
from tests.audit_log import last_event

PRE_CJ = "pre-cj-referral"
DV = "dv-perpetrator-programme"
NOBODY = "00000000-0000-4000-8000-000000000000"
NEXT_STEPS = {
    "submitted": ["accept", "decline", "withdraw"],
    "accepted": ["engage", "withdraw"],
    "engaged": ["complete", "disengage", "withdraw"],
    "completed": [],
}


def body(subject_ref: str, **changes) -> dict:
    base = {
        "subject_ref": subject_ref,
        "to_agency": "VSP-MENTOR",
        "service": "peer_mentoring",
        "pathways": ["ete", "attitudes"],
        "reasons": ["prolific_offending", "peer_influence"],
        "summary": "Keen to engage; staying with an aunt; avoid Tuesday mornings.",
        "urgency": "routine",
        "share_risk": ["reoffending", "serious_harm"],
        "consent": {"status": "pending"},
    }
    return {**base, **changes}


@pytest.fixture
def subject_id(db) -> str:
    """A person the police know under the IOM agreement (a PPO cohort member)."""
    return db.scalar(
        sa.select(CohortMembership.subject_id)
        .where(CohortMembership.cohort == "PPO", CohortMembership.end_date.is_(None))
        .limit(1)
    )


@pytest.fixture
def refer(api, subject_id):
    def make(purpose=PRE_CJ, key=None, **changes):
        headers = {"Idempotency-Key": key} if key else {}
        return api(
            "WMP",
            "post",
            "/api/v1/referrals",
            purpose=purpose,
            json=body(changes.pop("subject_ref", subject_id), **changes),
            headers=headers,
        )

    return make


def step(api, agency, referral, transition, purpose=PRE_CJ, etag=None, **payload):
    etag = etag or api(agency, "get", f"/api/v1/referrals/{referral}", purpose=purpose).headers.get(
        "ETag", '"none"'
    )
    return api(
        agency,
        "post",
        f"/api/v1/referrals/{referral}/{transition}",
        purpose=purpose,
        json=payload,
        headers={"If-Match": etag},
    )


def without_request_id(response) -> dict:
    return {k: v for k, v in response.get_json().items() if k != "request_id"}


def test_the_whole_story(api, db, refer, subject_id):
    created = refer()
    assert created.status_code == 201, created.get_json()
    referral = created.get_json()["ref"]
    assert created.headers["Location"] == f"/api/v1/referrals/{referral}"
    assert created.get_json()["status"] == "submitted"
    assert created.get_json()["subject_ref"] == subject_id  # the referrer sees its own reference

    # the charity first sees a pseudonymised referral: enough to decide
    first = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).get_json()
    assert (
        first["subject_ref"].startswith("psn") and first["subject_ref"] == first["subject"]["ref"]
    )
    assert "summary" not in first
    assert {"age_band", "area", "needs", "risk"} <= set(first["subject"])
    assert not {"given_name", "family_name", "phone", "postcode", "date_of_birth"} & set(
        first["subject"]
    )
    assert set(first["risk_shared"]) <= {"reoffending_band", "serious_harm_level"}
    assert first["allowed_transitions"] == ["accept", "decline"]
    raw = json.dumps(first)
    person = db.get(Subject, subject_id)
    assert json.dumps(person.family_name) not in raw and subject_id not in raw

    accepted = step(api, "VSP-MENTOR", referral, "accept")
    assert accepted.status_code == 200 and accepted.get_json()["status"] == "accepted"
    assert "given_name" not in accepted.get_json()["subject"]  # accepted, but no consent yet

    consent = api(
        "VSP-MENTOR",
        "post",
        f"/api/v1/referrals/{referral}/consent",
        purpose=PRE_CJ,
        json={"status": "given", "method": "written", "recorded_by": "mentor 17"},
        headers={"If-Match": accepted.headers["ETag"]},
    )
    assert consent.status_code == 200, consent.get_json()
    now_visible = consent.get_json()
    assert now_visible["subject"]["given_name"] == person.given_name
    assert now_visible["subject"]["phone"] == person.phone
    assert now_visible["summary"].startswith("Keen to engage")
    assert "identifiers" not in now_visible["subject"]  # contact, not identity numbers

    engaged = step(api, "VSP-MENTOR", referral, "engage", etag=consent.headers["ETag"])
    assert engaged.status_code == 200
    today = datetime.now(UTC).date().isoformat()
    for outcome in ("engagement_started", "intervention_completed"):
        response = api(
            "VSP-MENTOR",
            "post",
            f"/api/v1/referrals/{referral}/outcomes",
            purpose=PRE_CJ,
            json={"type": outcome, "occurred_on": today},
        )
        assert response.status_code == 201, response.get_json()
    done = step(api, "VSP-MENTOR", referral, "complete")
    assert done.get_json()["status"] == "completed"
    assert [h["status"] for h in done.get_json()["history"]] == [
        "submitted",
        "accepted",
        "engaged",
        "completed",
    ]

    # the police read the outcomes
    outcomes = api(
        "WMP", "get", f"/api/v1/referrals/{referral}/outcomes", purpose=PRE_CJ
    ).get_json()
    assert [o["type"] for o in outcomes["items"]] == [
        "engagement_started",
        "intervention_completed",
    ]

    # a third provider sees nothing: exactly like a referral that does not exist
    hidden = api("VSP-HOUSING", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ)
    missing = api("VSP-HOUSING", "get", f"/api/v1/referrals/{NOBODY}", purpose=PRE_CJ)
    assert hidden.status_code == missing.status_code == 404
    assert without_request_id(hidden) == without_request_id(missing)

    # the auditor sees every step
    accesses = api(
        "IG-AUDIT", "get", f"/api/v1/audit/subjects/{subject_id}/accesses", purpose="ig-audit"
    ).get_json()["accesses"]
    seen_by = {(a["agency"], a["purpose"]) for a in accesses}
    assert {("WMP", PRE_CJ), ("VSP-MENTOR", PRE_CJ)} <= seen_by
    assert ("VSP-HOUSING", PRE_CJ) not in seen_by
    steps = api(
        "IG-AUDIT",
        "get",
        f"/api/v1/audit/events?subject={subject_id}&agency=VSP-MENTOR&limit=200",
        purpose="ig-audit",
    ).get_json()["items"]
    routes = {e["event"]["route"] for e in steps}
    assert "/api/v1/referrals/<string:referral_id>/<string:transition>" in routes
    assert "/api/v1/referrals/<string:referral_id>/outcomes" in routes


def test_perpetrator_programme_never_sees_victims(api, db):
    perpetrator = db.scalar(
        sa.select(VictimLink.subject_id)
        .join(CohortMembership, CohortMembership.subject_id == VictimLink.subject_id)
        .where(CohortMembership.cohort == "DA", CohortMembership.end_date.is_(None))
        .limit(1)
    )
    created = api(
        "WMP",
        "post",
        "/api/v1/referrals",
        purpose=DV,
        json=body(
            perpetrator,
            to_agency="VSP-DVPP",
            service="dv_perpetrator_programme",
            reasons=["domestic_abuse"],
            consent={"status": "given", "method": "written"},
        ),
    )
    assert created.status_code == 201, created.get_json()
    referral = created.get_json()["ref"]
    assert step(api, "VSP-DVPP", referral, "accept", purpose=DV).status_code == 200
    seen = api("VSP-DVPP", "get", f"/api/v1/referrals/{referral}", purpose=DV)
    assert seen.status_code == 200 and "given_name" in seen.get_json()["subject"]
    text = seen.get_data(as_text=True)
    victims = db.scalars(
        sa.select(VictimLink.victim_ref).where(VictimLink.subject_id == perpetrator)
    ).all()
    assert victims and "victim" not in text and not any(v in text for v in victims)


def test_a_referral_is_used_only_for_its_purpose(api, db, refer):
    """Shared for one purpose, a referral is not read or changed under another purpose its
    parties happen to share (whose conditions may hold when the referral's own no longer do)."""
    created = refer(purpose=PRE_CJ)
    assert created.status_code == 201, created.get_json()
    referral = created.get_json()["ref"]
    assert api("WMP", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).status_code == 200
    etag = created.headers["ETag"]
    for method, path, payload in (
        ("get", f"/api/v1/referrals/{referral}", None),
        ("post", f"/api/v1/referrals/{referral}/withdraw", {"reason": "duplicate"}),
        ("post", f"/api/v1/referrals/{referral}/consent", {"status": "given", "method": "written"}),
        ("get", f"/api/v1/referrals/{referral}/outcomes", None),
    ):
        kwargs = {"json": payload, "headers": {"If-Match": etag}} if payload else {}
        response = api("WMP", method, path, purpose=DV, **kwargs)
        assert response.status_code == 404, (path, response.get_json())
        event = last_event(db)
        assert event["decision"] == "deny", path
    assert event["reason"] in ("not_the_referral_purpose", "outcomes_not_granted")
    listed = api("WMP", "get", "/api/v1/referrals", purpose=DV).get_json()["items"]
    assert referral not in {item["ref"] for item in listed}
    feed = api("WMP", "get", "/api/v1/changes?limit=200", purpose=DV).get_json()["items"]
    assert all(item["referral"] is None or item["referral"]["ref"] != referral for item in feed)
    assert api("WMP", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).status_code == 200


def test_referral_refused_without_an_agreement(refer):
    assert refer(to_agency="NPS").status_code == 403  # no referral grant to NPS
    assert refer(to_agency="VSP-DVPP").status_code == 403  # not under the pre-CJ agreement
    assert refer(purpose="iom-case-management").status_code == 403
    assert refer(to_agency="NOBODY").status_code == 422
    assert refer(subject_ref=NOBODY).status_code == 404


def test_idempotent_retry_never_makes_a_second_referral(db, refer):
    count = sa.select(sa.func.count()).select_from(Referral)
    before = db.scalar(count)
    first = refer(key="retry-7f3a")
    again = refer(key="retry-7f3a")
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert first.headers["ETag"] == again.headers["ETag"]
    assert db.scalar(count) == before + 1
    # The replay discloses the person again, so its audit event names them.
    replayed = last_event(db)
    assert replayed["reason"] == "idempotent_replay"
    assert replayed["subject_ids"] == [first.get_json()["subject_ref"]]
    assert replayed["agreement"].startswith("pre-cj-referral@") and "summary" in replayed["fields"]
    different = refer(key="retry-7f3a", urgency="urgent")
    assert different.status_code == 422
    assert db.scalar(count) == before + 1


def test_an_idempotent_replay_discloses_only_what_may_still_be_read(api, refer, expire_agreement):
    """A retry replays the stored referral; once no agreement lets the caller read it (here
    the agreement's new version has expired), the replay is refused like a read would be."""
    first = refer(key="retry-expiry")
    assert first.status_code == 201
    expire_agreement(PRE_CJ)
    ref = first.get_json()["ref"]
    assert api("WMP", "get", f"/api/v1/referrals/{ref}", purpose=PRE_CJ).status_code == 404
    replay = refer(key="retry-expiry")
    assert replay.status_code == 404, replay.get_json()
    assert "summary" not in replay.get_json()


def test_stale_etag_and_missing_if_match(api, refer):
    referral = refer().get_json()["ref"]
    etag = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).headers["ETag"]
    assert step(api, "VSP-MENTOR", referral, "accept", etag=etag).status_code == 200
    second = step(api, "VSP-MENTOR", referral, "decline", etag=etag, reason="capacity")
    assert second.status_code == 412  # the other caseworker's accept won
    no_header = api(
        "VSP-MENTOR", "post", f"/api/v1/referrals/{referral}/engage", purpose=PRE_CJ, json={}
    )
    assert no_header.status_code == 428


@pytest.mark.parametrize(
    ("setup", "agency", "transition", "status"),
    [
        ([], "VSP-MENTOR", "engage", 409),
        ([], "VSP-MENTOR", "complete", 409),
        ([], "VSP-MENTOR", "disengage", 409),
        ([], "VSP-MENTOR", "withdraw", 403),
        ([], "WMP", "accept", 403),
        ([], "VSP-MENTOR", "decline", 422),  # no reason
        ([], "VSP-MENTOR", "explode", 404),
        (["accept"], "VSP-MENTOR", "accept", 409),
        (["accept"], "VSP-MENTOR", "decline", 409),
        (["accept"], "VSP-MENTOR", "complete", 409),
        (["accept", "engage"], "VSP-MENTOR", "accept", 409),
        (["accept", "engage", "complete"], "VSP-MENTOR", "disengage", 409),
        (["accept", "engage", "complete"], "WMP", "withdraw", 409),
    ],
)
def test_invalid_transitions(api, refer, setup, agency, transition, status):
    referral = refer().get_json()["ref"]
    for name in setup:
        assert step(api, "VSP-MENTOR", referral, name).status_code == 200
    before = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).get_json()
    response = step(api, agency, referral, transition)
    assert response.status_code == status, response.get_json()
    assert response.content_type == "application/problem+json"
    if status == 409:  # the problem names the steps the current state allows
        assert response.get_json()["allowed"] == NEXT_STEPS[before["status"]]
    after = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).get_json()
    assert after["status"] == before["status"] and after["history"] == before["history"]


def test_withdraw_by_the_referrer(api, refer):
    referral = refer().get_json()["ref"]
    response = step(api, "WMP", referral, "withdraw")
    assert response.status_code == 200 and response.get_json()["status"] == "withdrawn"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {"service": "juggling"},
        {"pathways": []},
        {"pathways": "ete"},
        {"reasons": ["because"]},
        {"consent": {"status": "not_required"}},  # needs a lawful basis
        {"consent": {"status": "given", "notes": "x"}},
        {"urgency": 3},
        {"summary": "x" * 2001},
        {"colour": "blue"},
        {"subject_ref": ""},
        {"to_agency": "wmp'; DROP TABLE referrals;--"},
    ],
)
def test_malformed_bodies_change_nothing(api, db, subject_id, payload):
    count = sa.select(sa.func.count()).select_from(Referral)
    before = db.scalar(count)
    full = {**body(subject_id), **payload} if payload is not None else {}
    response = api("WMP", "post", "/api/v1/referrals", purpose=PRE_CJ, json=full)
    assert 400 <= response.status_code < 500, response.get_json()
    assert response.content_type == "application/problem+json"
    assert db.scalar(count) == before


def test_outcome_rules(api, refer):
    referral = refer().get_json()["ref"]
    today = datetime.now(UTC).date()
    submitted = api(
        "VSP-MENTOR",
        "post",
        f"/api/v1/referrals/{referral}/outcomes",
        purpose=PRE_CJ,
        json={"type": "engagement_started", "occurred_on": today.isoformat()},
    )
    assert submitted.status_code == 409  # not accepted yet
    step(api, "VSP-MENTOR", referral, "accept")
    cases = [
        (
            {"type": "engagement_started", "occurred_on": (today + timedelta(days=1)).isoformat()},
            422,
        ),
        ({"type": "further_offence_reported", "occurred_on": today.isoformat()}, 422),
        ({"type": "teleported", "occurred_on": today.isoformat()}, 422),
        ({"type": "engagement_started", "occurred_on": "31/12/2025"}, 422),
        (
            {
                "type": "further_offence_reported",
                "occurred_on": today.isoformat(),
                "detail": {"offence_type": "burglary_dwelling"},
            },
            201,
        ),
    ]
    for payload, status in cases:
        response = api(
            "VSP-MENTOR",
            "post",
            f"/api/v1/referrals/{referral}/outcomes",
            purpose=PRE_CJ,
            json=payload,
        )
        assert response.status_code == status, (payload, response.get_json())
    by_police = api(
        "WMP",
        "post",
        f"/api/v1/referrals/{referral}/outcomes",
        purpose=PRE_CJ,
        json={"type": "engagement_started", "occurred_on": today.isoformat()},
    )
    assert by_police.status_code == 403


def test_a_retried_outcome_is_recorded_once(api, db, refer):
    """A client retrying after a timeout must not count a further offence twice."""
    from gateway.models import Outcome

    referral = refer().get_json()["ref"]
    step(api, "VSP-MENTOR", referral, "accept")
    report = {
        "type": "further_offence_reported",
        "occurred_on": datetime.now(UTC).date().isoformat(),
        "detail": {"offence_type": "burglary_dwelling"},
    }

    def send(key, payload=report, to=referral):
        return api("VSP-MENTOR", "post", f"/api/v1/referrals/{to}/outcomes", purpose=PRE_CJ,
                   json=payload, headers={"Idempotency-Key": key})

    first, again = send("outcome-1"), send("outcome-1")
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    recorded = sa.select(sa.func.count()).select_from(Outcome).where(
        Outcome.referral_id == referral)
    assert db.scalar(recorded) == 1
    assert send("outcome-1", {**report, "type": "engagement_started"}).status_code == 422
    other = refer(subject_ref=db.scalar(sa.select(Referral.subject_id).where(
        Referral.id == referral)), pathways=["ete"]).get_json()["ref"]
    step(api, "VSP-MENTOR", other, "accept")
    assert send("outcome-1", to=other).status_code == 422  # same key, another referral
    assert db.scalar(recorded) == 1


def test_lists_by_direction_and_status(api, refer):
    referral = refer().get_json()["ref"]
    outbound = api("WMP", "get", "/api/v1/referrals?direction=outbound", purpose=PRE_CJ).get_json()[
        "items"
    ]
    assert referral in {r["ref"] for r in outbound}
    inbound = api(
        "VSP-MENTOR", "get", "/api/v1/referrals?direction=inbound&status=submitted", purpose=PRE_CJ
    ).get_json()["items"]
    assert referral in {r["ref"] for r in inbound}
    assert all(r["subject_ref"].startswith("psn") for r in inbound)
    assert api("VSP-HOUSING", "get", "/api/v1/referrals", purpose=PRE_CJ).get_json()["items"] == []
    assert (
        api("WMP", "get", "/api/v1/referrals?direction=sideways", purpose=PRE_CJ).status_code == 422
    )


def test_overdue_referrals_are_flagged_in_lists_and_the_referrers_feed(api, db, refer):
    referral = refer().get_json()["ref"]
    row = db.get(Referral, referral)
    row.decision_due = datetime.now(UTC) - timedelta(hours=1)
    db.commit()
    listed = api("WMP", "get", "/api/v1/referrals?direction=outbound", purpose=PRE_CJ).get_json()[
        "items"
    ]
    assert next(r for r in listed if r["ref"] == referral)["overdue"] is True
    feed = api("WMP", "get", "/api/v1/changes?limit=500", purpose=PRE_CJ).get_json()["items"]
    overdue = [c for c in feed if c["kind"] == "referral.overdue"]
    assert [c["referral"]["ref"] for c in overdue] == [referral]
    again = api("WMP", "get", "/api/v1/changes?limit=500", purpose=PRE_CJ).get_json()["items"]
    assert len([c for c in again if c["kind"] == "referral.overdue"]) == 1  # told once


def test_change_feed_is_ordered_resumable_and_private(api, refer):
    start = api("VSP-MENTOR", "get", "/api/v1/changes", purpose=PRE_CJ).get_json()["next_cursor"]
    referral = refer().get_json()["ref"]
    step(api, "VSP-MENTOR", referral, "accept")
    first = api(
        "VSP-MENTOR", "get", f"/api/v1/changes?since={start}&limit=1", purpose=PRE_CJ
    ).get_json()
    rest = api(
        "VSP-MENTOR", "get", f"/api/v1/changes?since={first['next_cursor']}", purpose=PRE_CJ
    ).get_json()
    kinds = [c["kind"] for c in first["items"] + rest["items"]]
    assert kinds == ["referral.received", "referral.status_changed"]
    assert rest["items"][0]["referral"]["status"] == "accepted"
    empty = api(
        "VSP-MENTOR", "get", f"/api/v1/changes?since={rest['next_cursor']}", purpose=PRE_CJ
    ).get_json()
    assert empty["items"] == [] and empty["next_cursor"] == rest["next_cursor"]
    others = api("VSP-HOUSING", "get", f"/api/v1/changes?since={start}", purpose=PRE_CJ).get_json()
    assert referral not in json.dumps(others)
    assert (
        api("VSP-MENTOR", "get", "/api/v1/changes?since=forged", purpose=PRE_CJ).status_code == 400
    )
    # Read under a purpose that does not show the referral, its changes say nothing of it:
    # not even the status it moved to.
    elsewhere = api("WMP", "get", f"/api/v1/changes?since={start}", purpose=DV).get_json()
    about = [c for c in elsewhere["items"] if c["kind"].startswith("referral.")]
    assert about and all(c["referral"] is None and c["detail"] == {} for c in about)


def test_withdrawn_falls_back_to_pseudonymised_then_disappears_after_retention(api, db, refer):
    referral = refer(consent={"status": "given", "method": "verbal"}).get_json()["ref"]
    accepted = step(api, "VSP-MENTOR", referral, "accept")
    assert "given_name" in accepted.get_json()["subject"]
    assert step(api, "WMP", referral, "withdraw").status_code == 200
    after = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ)
    assert after.status_code == 200
    assert "given_name" not in after.get_json().get("subject", {})
    row = db.get(Referral, referral)
    row.closed_at = datetime.now(UTC) - timedelta(days=800)  # beyond the agreement's P1Y
    db.commit()
    assert (
        api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).status_code == 404
    )
    assert api("WMP", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).status_code == 200


def test_managing_agencies_see_outcomes_but_not_the_referral(api, db):
    from gateway.models import Agency, Management

    nps = db.scalar(sa.select(Agency.id).where(Agency.code == "NPS"))
    managed = db.scalar(
        sa.select(Management.subject_id)
        .join(CohortMembership, CohortMembership.subject_id == Management.subject_id)
        .where(
            Management.agency_id == nps,
            Management.end_date.is_(None),
            CohortMembership.cohort == "PPO",
            CohortMembership.end_date.is_(None),
        )
        .limit(1)
    )
    assert managed, "the demo world has an NPS-managed PPO"
    start = api("NPS", "get", "/api/v1/changes").get_json()["next_cursor"]
    referral = api(
        "WMP", "post", "/api/v1/referrals", purpose=PRE_CJ, json=body(managed)
    ).get_json()["ref"]
    step(api, "VSP-MENTOR", referral, "accept")
    today = datetime.now(UTC).date().isoformat()
    api(
        "VSP-MENTOR",
        "post",
        f"/api/v1/referrals/{referral}/outcomes",
        purpose=PRE_CJ,
        json={"type": "engagement_started", "occurred_on": today},
    )

    outcomes = api("NPS", "get", f"/api/v1/referrals/{referral}/outcomes")
    assert outcomes.status_code == 200, outcomes.get_json()
    assert [o["type"] for o in outcomes.get_json()["items"]] == ["engagement_started"]
    assert "detail" not in outcomes.get_json()["items"][0]
    assert api("NPS", "get", f"/api/v1/referrals/{referral}").status_code == 404  # not a party
    feed = api("NPS", "get", f"/api/v1/changes?since={start}").get_json()["items"]
    added = [c for c in feed if c["kind"] == "outcome.added"]
    assert [c["outcome"]["type"] for c in added] == ["engagement_started"]
    assert all(c["referral"] is None for c in added)
    # an agency with no relationship to the person sees nothing
    assert api("CRC", "get", f"/api/v1/referrals/{referral}/outcomes").status_code in (403, 404)


def test_the_agreements_view_shows_the_age_band_the_recipient_is_given(api, refer):
    referral = refer().get_json()["ref"]
    shown = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ).get_json()
    assert "age_band" in shown["subject"]
    assert not {"date_of_birth", "year_of_birth"} & set(shown["subject"])

    listed = api("VSP-MENTOR", "get", "/api/v1/agreements", purpose=PRE_CJ)
    detail = api("VSP-MENTOR", "get", f"/api/v1/agreements/{PRE_CJ}", purpose=PRE_CJ)
    assert listed.status_code == detail.status_code == 200
    (agreement,) = [a for a in listed.get_json()["items"] if a["id"] == PRE_CJ]
    for grants in (agreement["grants_to_you"], detail.get_json()["grants_to_you"]):
        by_id = {g["id"]: g for g in grants}
        # the grant that releases date_of_birth pseudonymised says it is released as a band
        assert "date_of_birth" in by_id["subject-referred"]["fields"]
        assert by_id["subject-referred"]["level"] == "pseudonymised"
        assert by_id["subject-referred"]["age_band"] is True
        assert by_id["subject-consented-contact"]["age_band"] is False
        assert all(isinstance(g["age_band"], bool) for g in grants)


def test_explain_decides_as_the_gateway_does_for_a_closed_referral(app, db, subject_id):
    """A referral declined yesterday still relates its recipient to the person within the
    agreement's retention: `agreements explain --subject` must say so, as reads do."""
    from gateway.models import Agency
    from gateway.services.decisions import decide_for_agency, decide_on_subject
    from gateway.services.subjects import load_subjects

    agencies = {a.code: a for a in db.scalars(sa.select(Agency))}
    now = datetime.now(UTC)
    db.add(Referral(
        subject_id=subject_id, from_agency_id=agencies["WMP"].id,
        to_agency_id=agencies["VSP-MENTOR"].id, purpose=PRE_CJ, service="peer_mentoring",
        pathways=[], reasons=[], urgency="routine", risk_shared={},
        consent={"status": "pending"}, status="declined", decision_due=now,
        closed_at=now - timedelta(days=1),
    ))
    db.flush()
    policy = app.extensions["gateway.agreements"].current()
    subject = load_subjects(db, [subject_id])[subject_id]
    read = decide_on_subject(policy, "VSP-MENTOR", "voluntary", "read", PRE_CJ, subject, now)
    explained = decide_for_agency(
        db, policy, "VSP-MENTOR", "read", "subject", PRE_CJ, subject_id, now
    )
    assert read.permitted and explained.permitted == read.permitted
    assert explained.basis == read.basis


HOUSING_SURVEY = """
id: mentor-housing-survey
version: 1
title: Test - a second agreement between the same parties, for another purpose
parties: [{agency: WMP, role: controller}, {agency: VSP-MENTOR, role: recipient}]
purposes: [{code: housing-survey, description: Surveying the people referred to us}]
lawful_basis: ["UK GDPR Art 6(1)(e)"]
valid_from: 2015-02-01
valid_until: 2099-12-31
review_by: 2099-01-01
retention: P1Y
grants:
  - id: subject-referred-here
    recipients: [VSP-MENTOR]
    purposes: [housing-survey]
    resource: subject
    actions: [read, list]
    conditions: {relationships: [active_referral_to_recipient]}
    fields: [ref, area, needs]
    level: pseudonymised
"""


def test_a_referral_relates_its_recipient_for_the_referral_purpose_only(
    api, refer, load_agreement
):
    """A pre-CJ referral to the mentors does not satisfy a grant of another agreement, for
    another purpose, conditioned on a referral to them: that would be purpose creep."""
    load_agreement(HOUSING_SURVEY)
    created = refer()
    assert created.status_code == 201
    referral = created.get_json()["ref"]
    seen = api("VSP-MENTOR", "get", f"/api/v1/referrals/{referral}", purpose=PRE_CJ)
    assert seen.status_code == 200 and "subject" in seen.get_json()  # related for pre-CJ
    listed = api("VSP-MENTOR", "get", "/api/v1/subjects?limit=200", purpose="housing-survey")
    assert listed.status_code == 200 and listed.get_json()["items"] == []


def test_lists_match_consented_referrals_only_while_open(app, db, subject_id):
    """The list SQL agrees with the per-record decision: a consented referral closed years
    ago relates nobody any more (it matched, and the decision then dropped the row)."""
    from gateway.models import Agency
    from gateway.services.subjects import load_subjects, record_context, scope_filter
    from policies.engine import GrantScope

    agencies = {a.code: a for a in db.scalars(sa.select(Agency))}
    mentor = agencies["VSP-MENTOR"]
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=3 * 365)
    consent_grant = GrantScope(
        "a@1", "g", "identified", (), frozenset(), frozenset(), None, None,
        frozenset({"accepted_referral_with_consent"}),
    )  # fmt: skip
    policy = app.extensions["gateway.agreements"].current()
    for status, closed_at in (("completed", long_ago), ("engaged", None)):
        db.execute(sa.delete(Referral).where(Referral.subject_id == subject_id))
        db.add(Referral(
            subject_id=subject_id, from_agency_id=agencies["WMP"].id, to_agency_id=mentor.id,
            purpose=PRE_CJ, service="peer_mentoring", pathways=[], reasons=[],
            urgency="routine", risk_shared={}, consent={"status": "given", "method": "written"},
            status=status, decision_due=long_ago, closed_at=closed_at,
        ))  # fmt: skip
        db.flush()
        listed = db.scalar(
            sa.select(sa.func.count()).where(
                Subject.id == subject_id,
                scope_filter([consent_grant], mentor.id, now.date(), PRE_CJ),
            )
        )
        subject = load_subjects(db, [subject_id])[subject_id]
        context = record_context(subject, now.date(), policy, purpose=PRE_CJ)
        related = "VSP-MENTOR" in context.accepted_with_consent_by
        assert bool(listed) == related == (status == "engaged"), status
