"""Subjects through HTTP: only what agreements permit, pseudonymised where they say so, and
records outside the caller's agreements indistinguishable from records that do not exist."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.agreement_store import retire_agreement
from gateway.keys import load_from_environment
from gateway.models import PseudonymKeyVersion, Subject, SubjectIdentifier
from gateway.services.pseudonymisation import record_key_versions_at_start, rotate_pseudonym_key
from tests.audit_log import last_event
from tests.sql import statements_sent

CASE = "iom-case-management"
UUID = re.compile(r"^[0-9a-f-]{36}$")
IDENTIFYING = (
    "given_name",
    "family_name",
    "date_of_birth",
    "identifiers",
    "address_line",
    "postcode",
    "phone",
)

# A test-only agreement: housing and mentoring see Birmingham subjects pseudonymised.
PSEUDONYMISED_AGREEMENT = (
    Path(__file__).parents[1] / "data" / "test-area-profile.yaml"
).read_text()


@pytest.fixture
def pseudonymised_agreement(load_agreement):
    load_agreement(PSEUDONYMISED_AGREEMENT)


def items(response) -> list[dict]:
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def all_pages(api, agency, path, purpose=CASE) -> list[dict]:
    found, cursor = [], None
    while True:
        url = path + (f"&cursor={cursor}" if cursor else "")
        body = api(agency, "get", url, purpose=purpose).get_json()
        found.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return found


def test_police_list_their_cohorts_identified(api, db):
    records = all_pages(api, "WMP", "/api/v1/subjects?limit=40")
    assert records
    assert len({r["ref"] for r in records}) == len(records)  # pages do not overlap
    granted = {"PPO", "HCCU", "SAC", "DA", "GANG", "FEMALE", "YOUTH"}
    for record in records:
        assert UUID.match(record["ref"])
        assert record["disclosure"]["level"] == "identified"
        via_caseload = "core-iom@3#subject-own-caseload" in record["disclosure"]["basis"]
        assert set(record["cohorts"]) & granted or via_caseload


def test_probation_sees_only_its_own_caseload(api, db):
    records = all_pages(api, "NPS", "/api/v1/subjects?limit=50")
    assert records
    for record in records:
        assert "NPS" in {m["agency"] for m in record["management"]}


def test_youth_offending_team_sees_only_under_18s(api):
    records = all_pages(api, "YOT-BIR", "/api/v1/subjects?limit=50")
    today = datetime.now(UTC).date()
    for record in records:
        born = datetime.fromisoformat(record["date_of_birth"]).date()
        assert (today - born).days < 18 * 366


def test_filters_and_bad_filters(api):
    for record in items(api("WMP", "get", "/api/v1/subjects?area=COV&limit=200")):
        assert record["area"] == "COV"
    assert api("WMP", "get", "/api/v1/subjects?area=NARNIA").status_code == 422
    assert api("WMP", "get", "/api/v1/subjects?updated_since=yesterday").status_code == 422
    assert (
        api("WMP", "get", "/api/v1/subjects?updated_since=2026-01-01T00:00:00").status_code == 422
    )  # no offset
    assert api("WMP", "get", "/api/v1/subjects?limit=100000").status_code == 422
    assert api("WMP", "get", "/api/v1/subjects?cursor=not-ours").status_code == 400
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert items(api("WMP", "get", f"/api/v1/subjects?updated_since={future}")) == []


def test_cohort_filter_matches_current_memberships_only(api, db):
    """An ended membership is the past, which the disclosed `cohorts` never show: a filter
    that matched it would tell the caller who used to be, say, in the DA cohort."""
    from gateway.models import CohortMembership

    today = datetime.now(UTC).date()
    ended = set(db.scalars(sa.select(CohortMembership.cohort).where(
        CohortMembership.end_date < today)))
    assert ended  # the demo data has ended memberships to leak
    for cohort in sorted(ended):
        for record in all_pages(api, "WMP", f"/api/v1/subjects?cohort={cohort}&limit=200"):
            assert cohort in record["cohorts"], (cohort, record["ref"], record["cohorts"])


def out_of_scope_subject(db, agency_code: str) -> str:
    """A subject no grant gives this agency: managed by nobody it relates to."""
    from gateway.models import Agency, Management

    agency_id = db.scalar(sa.select(Agency.id).where(Agency.code == agency_code))
    return db.scalar(
        sa.select(Subject.id)
        .where(
            ~sa.exists().where(
                Management.subject_id == Subject.id, Management.agency_id == agency_id
            )
        )
        .limit(1)
    )


def comparable(response) -> tuple:
    body = response.get_json()
    body.pop("request_id")
    headers = {
        k: v for k, v in response.headers.items() if k not in ("X-Request-ID", "Content-Length")
    }
    return response.status_code, body, headers


def test_out_of_scope_and_nonexistent_records_are_indistinguishable(api, db):
    hidden = out_of_scope_subject(db, "NPS")
    missing = str(uuid.uuid4())
    assert comparable(api("NPS", "get", f"/api/v1/subjects/{hidden}")) == comparable(
        api("NPS", "get", f"/api/v1/subjects/{missing}")
    )
    assert api("NPS", "get", f"/api/v1/subjects/{hidden}").status_code == 404


def test_wrong_purpose_denies_and_explains_in_the_audit_log(api, db):

    subject = items(api("WMP", "get", "/api/v1/subjects?limit=1"))[0]["ref"]
    response = api("WMP", "get", f"/api/v1/subjects/{subject}", purpose="performance-reporting")
    assert response.status_code == 404
    body = last_event(db)
    assert body["decision"] == "deny" and body["reason"] == "purpose_not_granted"
    assert body["subject_ids"] == [subject]


def pnc_of(db, subject_id: str) -> str:
    return db.scalar(
        sa.select(SubjectIdentifier.value).where(
            SubjectIdentifier.subject_id == subject_id, SubjectIdentifier.scheme == "PNC"
        )
    )


def test_search_by_identifier_normalises_and_needs_identified_level(api, db):
    subject = items(api("WMP", "get", "/api/v1/subjects?limit=1"))[0]
    pnc = pnc_of(db, subject["ref"])
    year, rest = pnc.split("/")
    variant = (
        f" 20{year} / {rest.lstrip('0').lower()} " if int(year) < 30 else f"19{year}/{rest.lower()}"
    )
    for value in (pnc, variant):
        found = api(
            "WMP", "post", "/api/v1/subjects/search", json={"scheme": "PNC", "value": value}
        )
        assert found.status_code == 200, (value, found.get_json())
        assert found.get_json()["ref"] == subject["ref"]
    bad_check = pnc[:-1] + ("A" if pnc[-1] != "A" else "B")
    assert (
        api(
            "WMP", "post", "/api/v1/subjects/search", json={"scheme": "PNC", "value": bad_check}
        ).status_code
        == 422
    )
    provider = api(
        "VSP-MENTOR",
        "post",
        "/api/v1/subjects/search",
        json={"scheme": "PNC", "value": pnc},
        purpose="pre-cj-referral",
    )
    assert provider.status_code == 403  # no subjects:search scope for providers


def test_identifier_never_appears_in_a_url(app):
    for rule in app.url_map.iter_rules():
        assert not any(word in rule.rule.lower() for word in ("pnc", "crn", "nomis"))


def test_pseudonymised_disclosure_over_http(api, db, pseudonymised_agreement):
    records = items(
        api("VSP-HOUSING", "get", "/api/v1/subjects?limit=30", purpose="pre-cj-referral")
    )
    assert records
    raw = json.dumps(records)
    for record in records:
        assert record["ref"].startswith("psn")
        assert record["disclosure"]["level"] == "pseudonymised"
        assert not set(IDENTIFYING) & set(record)
        assert record["area"] == "BIR"
        assert "year_of_birth" in record or "age_band" in record
        assert re.fullmatch(r"B\d{1,2}", record.get("postcode_district", "B1"))
    subjects = db.scalars(sa.select(Subject).where(Subject.area_code == "BIR")).all()
    for subject in subjects:
        for value in (
            subject.given_name,
            subject.family_name,
            subject.postcode,
            subject.phone,
            subject.date_of_birth.isoformat(),
            subject.id,
        ):
            if value:
                assert json.dumps(value) not in raw


def test_pseudonyms_resolve_for_their_recipient_only_and_are_unlinkable(
    api, pseudonymised_agreement
):
    housing = items(
        api("VSP-HOUSING", "get", "/api/v1/subjects?limit=5", purpose="pre-cj-referral")
    )
    mentor = items(
        api("VSP-MENTOR", "get", "/api/v1/subjects?limit=200", purpose="pre-cj-referral")
    )
    ref = housing[0]["ref"]
    again = api("VSP-HOUSING", "get", f"/api/v1/subjects/{ref}", purpose="pre-cj-referral")
    assert again.status_code == 200 and again.get_json()["ref"] == ref  # stable
    assert (
        api("VSP-MENTOR", "get", f"/api/v1/subjects/{ref}", purpose="pre-cj-referral").status_code
        == 404
    )
    assert not {r["ref"] for r in housing} & {r["ref"] for r in mentor}


def test_pseudonyms_are_indexed_once(api, app, pseudonymised_agreement):
    """Handing a pseudonym out indexes it; reading the person by it, or listing them again,
    writes no index row (only the audit event)."""
    with statements_sent(app.extensions["gateway.db"].engine, words=3) as statements:
        listed = items(
            api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral")
        )
        assert "INSERT INTO PSEUDONYM_INDEX" in statements  # handed out: indexed
        statements.clear()
        ref = listed[0]["ref"]
        again = api("VSP-HOUSING", "get", f"/api/v1/subjects/{ref}", purpose="pre-cj-referral")
        relisted = items(
            api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral")
        )
    assert again.status_code == 200 and again.get_json()["ref"] == ref
    assert [r["ref"] for r in relisted] == [r["ref"] for r in listed]
    assert "INSERT INTO PSEUDONYM_INDEX" not in statements, statements


def test_a_pseudonym_works_only_under_the_agreement_it_was_issued_for(
    api, load_agreement, pseudonymised_agreement
):
    """A recipient of two agreements holds two unlinkable pseudonyms per person: one read
    under the other agreement's purpose would answer with the other, linking them."""
    load_agreement(
        PSEUDONYMISED_AGREEMENT.replace("id: test-area-profile", "id: second-profile")
        .replace("pre-cj-referral", "housing-planning")
    )
    first = items(api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral"))
    other = items(api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="housing-planning"))
    assert first and not {r["ref"] for r in first} & {r["ref"] for r in other}
    for record in first:
        path = f"/api/v1/subjects/{record['ref']}"
        assert api("VSP-HOUSING", "get", path, purpose="pre-cj-referral").status_code == 200
        crossed = api("VSP-HOUSING", "get", path, purpose="housing-planning")
        assert crossed.status_code == 404, crossed.get_json()


def test_a_pseudonymised_list_cursor_reveals_no_internal_id(api, db, pseudonymised_agreement):
    """The cursor holds the page's last internal id: readable, it would give the id behind
    the pseudonym beside it, and link every recipient's pseudonyms through it."""
    import base64

    from gateway.pagination import encode_cursor

    url = "/api/v1/subjects?limit=1"
    paged = all_pages(api, "VSP-HOUSING", url, purpose="pre-cj-referral")
    whole = items(
        api("VSP-HOUSING", "get", "/api/v1/subjects?limit=200", purpose="pre-cj-referral")
    )
    assert [r["ref"] for r in paged] == [r["ref"] for r in whole] and len(paged) > 1
    ids = set(db.scalars(sa.select(Subject.id)))
    first = api("VSP-HOUSING", "get", url, purpose="pre-cj-referral").get_json()
    cursor = first["next_cursor"]
    readable = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert not any(i.encode() in readable or i in cursor for i in ids)
    for forged in (cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1],
                   encode_cursor({"after": sorted(ids)[0]})):
        refused = api("VSP-HOUSING", "get", f"{url}&cursor={forged}", purpose="pre-cj-referral")
        assert refused.status_code == 400, forged


def test_pseudonymised_recipient_cannot_use_internal_ids(api, db, pseudonymised_agreement):
    subject_id = db.scalar(sa.select(Subject.id).where(Subject.area_code == "BIR").limit(1))
    assert (
        api(
            "VSP-HOUSING", "get", f"/api/v1/subjects/{subject_id}", purpose="pre-cj-referral"
        ).status_code
        == 404
    )


@contextmanager
def rotated_pseudonym_key(app, db) -> Iterator[tuple[int, int]]:
    """(old, new) versions of a rotation done for the test; the session's key store gets its
    keys back afterwards (the world is shared by every test)."""
    keys = app.extensions["gateway.keys"]
    old_version = keys.pseudonym_key_version
    new_version = rotate_pseudonym_key(db, keys)
    db.commit()
    try:
        yield old_version, new_version
    finally:
        keys.pseudonym_keys.pop(new_version)
        (Path(keys.directory) / f"pseudonym-v{new_version}.key").unlink()


def test_key_rotation_keeps_old_pseudonyms_for_the_grace_period(
    api, app, db, pseudonymised_agreement
):
    old = items(api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral"))
    with rotated_pseudonym_key(app, db) as (old_version, _):
        new = items(
            api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral")
        )
        assert [r["ref"] for r in new] != [r["ref"] for r in old]
        mapping = api(
            "VSP-HOUSING",
            "get",
            f"/api/v1/pseudonyms/rotation?from_version={old_version}",
            purpose="pre-cj-referral",
        ).get_json()["pseudonyms"]
        assert set(mapping) >= {r["ref"] for r in old}  # every old pseudonym is mapped
        # ... to the pseudonym the gateway now gives the same person (lists keep their order)
        assert [mapping[r["ref"]] for r in old] == [r["ref"] for r in new]
        for before in old:
            assert (
                api(
                    "VSP-HOUSING",
                    "get",
                    f"/api/v1/subjects/{before['ref']}",
                    purpose="pre-cj-referral",
                ).status_code
                == 200
            )
        # after the grace period the old pseudonyms no longer resolve
        version = db.get(PseudonymKeyVersion, old_version)
        version.superseded_at = datetime.now(UTC) - timedelta(
            days=app.config["GATEWAY"].pseudonym_grace_days + 1
        )
        db.commit()
        assert (
            api(
                "VSP-HOUSING", "get", f"/api/v1/subjects/{old[0]['ref']}", purpose="pre-cj-referral"
            ).status_code
            == 404
        )


def rotation_map(api, from_version: int) -> dict[str, str]:
    response = api(
        "VSP-HOUSING",
        "get",
        f"/api/v1/pseudonyms/rotation?from_version={from_version}",
        purpose="pre-cj-referral",
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["pseudonyms"]


def status_of(api, ref: str) -> int:
    return api(
        "VSP-HOUSING", "get", f"/api/v1/subjects/{ref}", purpose="pre-cj-referral"
    ).status_code


def age_key_version(app, db, version: int) -> None:
    """Time passes: a version recorded as superseded was superseded beyond the grace period."""
    grace = timedelta(days=app.config["GATEWAY"].pseudonym_grace_days)
    db.execute(
        sa.update(PseudonymKeyVersion)
        .where(
            PseudonymKeyVersion.version == version, PseudonymKeyVersion.superseded_at.is_not(None)
        )
        .values(superseded_at=datetime.now(UTC) - grace - timedelta(days=1))
    )
    db.commit()


def test_rotation_map_gives_pseudonyms_that_resolve(api, app, db, pseudonymised_agreement):
    """A recipient that rotates straight from the map, before any list hands it the new
    pseudonyms, can use them at once."""
    old = items(api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral"))
    with rotated_pseudonym_key(app, db) as (old_version, new_version):
        mapping = rotation_map(api, old_version)
        for record in old:
            new = mapping[record["ref"]]
            assert new.startswith(f"psn{new_version}_")
            again = api("VSP-HOUSING", "get", f"/api/v1/subjects/{new}", purpose="pre-cj-referral")
            assert again.status_code == 200 and again.get_json()["ref"] == new


@pytest.mark.parametrize("ended_by", ["grace-period", "retired-agreement"])
def test_rotation_map_leaves_out_pseudonyms_that_no_longer_resolve(
    api, app, db, pseudonymised_agreement, ended_by
):
    old = items(api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral"))
    with rotated_pseudonym_key(app, db) as (old_version, _):
        assert {r["ref"] for r in old} <= set(rotation_map(api, old_version))
        if ended_by == "grace-period":
            age_key_version(app, db, old_version)
        else:
            retire_agreement(db, "test-area-profile")
            db.commit()
            app.extensions["gateway.agreements"].forget()
        for record in old:
            assert status_of(api, record["ref"]) == 404
        assert not {r["ref"] for r in old} & set(rotation_map(api, old_version))


def test_environment_key_rotation_expires_old_pseudonyms_after_the_grace_period(
    api, app, db, pseudonymised_agreement, monkeypatch
):
    """Production keys: the operator adds version 2 to GATEWAY_PSEUDONYM_KEYS and restarts
    (`keys rotate` refuses them). The start that first sees version 2 supersedes version 1, so
    version 1 pseudonyms resolve for the grace period and then no longer."""
    directory_keys = app.extensions["gateway.keys"]
    old = items(api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral"))
    assert {r["ref"][:5] for r in old} == {"psn1_"}
    folder = Path(directory_keys.directory)
    v1 = (folder / "pseudonym-v1.key").read_text().strip()
    v2 = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv("GATEWAY_TOKEN_SIGNING_KEY", (folder / "token-signing-v1.pem").read_text())
    monkeypatch.setenv(
        "GATEWAY_CHECKPOINT_SIGNING_KEY", (folder / "checkpoint-signing-v1.pem").read_text()
    )
    monkeypatch.setenv("GATEWAY_PSEUDONYM_KEYS", f"1:{v1},2:{v2}")
    environment_keys = load_from_environment()
    assert environment_keys is not None and environment_keys.directory is None
    monkeypatch.setitem(app.extensions, "gateway.keys", environment_keys)
    record_key_versions_at_start(app.extensions["gateway.db"], environment_keys)  # restart
    new = items(
        api("VSP-HOUSING", "get", "/api/v1/subjects?limit=3", purpose="pre-cj-referral")
    )
    assert {r["ref"][:5] for r in new} == {"psn2_"}
    assert all(status_of(api, r["ref"]) == 200 for r in old)  # within the grace period
    age_key_version(app, db, 1)
    record_key_versions_at_start(app.extensions["gateway.db"], environment_keys)  # again
    assert all(status_of(api, r["ref"]) == 404 for r in old)  # expired
    assert all(status_of(api, r["ref"]) == 200 for r in new)


def test_providers_never_see_victims(api, pseudonymised_agreement):
    for agency in ("VSP-HOUSING", "VSP-MENTOR", "VSP-DVPP"):
        for purpose in ("pre-cj-referral", "dv-perpetrator-programme"):
            response = api(agency, "get", "/api/v1/subjects?limit=200", purpose=purpose)
            if response.status_code == 200:
                assert "victim" not in response.get_data(as_text=True)


def test_agreements_show_only_what_the_caller_is_party_to(api):
    mine = {
        a["id"]
        for a in items(api("VSP-MENTOR", "get", "/api/v1/agreements", purpose="pre-cj-referral"))
    }
    assert "pre-cj-referral" in mine and "core-iom" not in mine
    assert (
        api(
            "VSP-MENTOR", "get", "/api/v1/agreements/core-iom", purpose="pre-cj-referral"
        ).status_code
        == 404
    )
    detail = api(
        "VSP-MENTOR", "get", "/api/v1/agreements/pre-cj-referral", purpose="pre-cj-referral"
    ).get_json()
    assert detail["grants_to_you"] and all(
        g["level"] in ("identified", "pseudonymised") for g in detail["grants_to_you"]
    )
