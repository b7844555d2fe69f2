"""Disclosure of concrete records: what each level keeps, generalises and withholds."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from policies.disclose import disclose
from policies.engine import Decision, PolicySet, RecordContext, compile_policy, decide
from tests.policies.conftest import NOW
from tests.policies.helpers import agreement, grant

TODAY = NOW.date()

SUBJECT: dict[str, Any] = {
    "ref": "subj-000123",
    "given_name": "Ann",
    "family_name": "Example",
    "date_of_birth": date(1995, 3, 4),
    "gender": "F",
    "ethnicity": "W1",
    "address_line": "1 Example Street",
    "postcode": "b152tt",
    "phone": "07700900123",
    "identifiers": {"pnc": "12/0012345A", "crn": "X123456", "nomis": "A1234BC"},
    "area": "BIR",
    "policing_unit": "BIR-S",
    "cohorts": ["PPO"],
    "risk": {
        "reoffending_score": 0.82,
        "reoffending_band": "high",
        "serious_harm_level": "medium",
        "assessed_at": datetime(2025, 1, 2, tzinfo=UTC),
    },
    "needs": {"accommodation": "high", "ete": "medium"},
    "management": [
        {"agency": "CRC", "statutory": True, "offender_manager_ref": "OM-77", "since": "2024-01-01"}
    ],
    "linked_victims": [{"victim_ref": "vic-9", "relationship": "partner"}],
    "updated_at": datetime(2025, 5, 1, tzinfo=UTC),
}


def decision_for(policy: PolicySet, resource: str = "subject", agency: str = "WMP") -> Decision:
    kind = "voluntary" if agency.startswith("VSP") else "police"
    return decide(
        policy,
        agency=agency,
        agency_kind=kind,
        action="read",
        resource=resource,
        purpose="testing",
        record=RecordContext(),
        now=NOW,
    )


def one_grant(**kwargs: Any) -> Decision:
    resource = kwargs.get("resource", "subject")
    return decision_for(compile_policy([agreement(grant(**kwargs))]), resource)


def test_identified_level_releases_exactly_the_granted_fields() -> None:
    decision = one_grant(fields=["ref", "group:identity", "risk"])
    released = disclose(SUBJECT, decision, pseudonym=None, today=TODAY)
    assert set(released) == {
        "ref",
        "given_name",
        "family_name",
        "date_of_birth",
        "gender",
        "identifiers",
        "risk",
    }
    assert released["ref"] == "subj-000123" and released["risk"] == SUBJECT["risk"]
    released["risk"]["reoffending_band"] = "changed"
    assert SUBJECT["risk"]["reoffending_band"] == "high"  # a copy, not the caller's object


def test_pseudonymised_subject() -> None:
    everything = [
        "ref",
        "group:identity",
        "group:contact",
        "group:special_category",
        "group:location",
        "risk",
        "needs",
        "management",
        "cohorts",
        "group:victim",
        "updated_at",
    ]
    decision = one_grant(fields=everything, level="pseudonymised")
    released = disclose(SUBJECT, decision, pseudonym="psn1_abc", today=TODAY)
    assert released == {
        "ref": "psn1_abc",
        "year_of_birth": 1995,
        "gender": "F",
        "ethnicity": "W1",
        "postcode_district": "B15",
        "area": "BIR",
        "policing_unit": "BIR-S",
        "cohorts": ["PPO"],
        "risk": {"reoffending_band": "high", "serious_harm_level": "medium"},
        "needs": {"accommodation": "high", "ete": "medium"},
        "management": [{"agency": "CRC", "statutory": True, "since": "2024-01-01"}],
        "updated_at": SUBJECT["updated_at"],
    }


def test_age_band_instead_of_year_of_birth() -> None:
    decision = one_grant(fields=["date_of_birth"], level="pseudonymised", age_band=True)
    assert disclose(SUBJECT, decision, pseudonym=None, today=TODAY) == {"age_band": "25-34"}
    text_date = {**SUBJECT, "date_of_birth": "1995-03-04"}
    assert disclose(text_date, decision, pseudonym=None, today=TODAY) == {"age_band": "25-34"}


def test_pseudonymised_ref_without_a_pseudonym_is_withheld() -> None:
    decision = one_grant(fields=["ref", "area"], level="pseudonymised")
    assert disclose(SUBJECT, decision, pseudonym=None, today=TODAY) == {"area": "BIR"}


@pytest.mark.parametrize("postcode", ["B15 2T", "ZZ", "", None])
def test_unparseable_postcode_and_date_are_dropped(postcode: object) -> None:
    decision = one_grant(fields=["postcode", "date_of_birth"], level="pseudonymised")
    record = {**SUBJECT, "postcode": postcode, "date_of_birth": "04/03/1995"}
    assert disclose(record, decision, pseudonym=None, today=TODAY) == {}


def test_pseudonymised_referral_drops_free_text_and_replaces_the_subject() -> None:
    fields = ["ref", "subject_ref", "summary", "history", "status", "reasons", "consent"]
    decision = one_grant(resource="referral", fields=fields, level="pseudonymised")
    referral = {
        "ref": "ref-1",
        "subject_ref": "subj-000123",
        "summary": "Ann Example needs a place to stay",
        "history": [{"status": "sent", "at": "2025-05-01", "note": "spoke to Ann", "by": "PC 1"}],
        "status": "sent",
        "reasons": ["accommodation"],
        "consent": {"status": "given", "recorded_at": "2025-05-01", "recorded_by": "PC Smith"},
        "urgency": "high",
    }
    assert disclose(referral, decision, pseudonym="psn1_x", today=TODAY) == {
        "ref": "ref-1",
        "subject_ref": "psn1_x",
        "history": [{"status": "sent", "at": "2025-05-01"}],
        "status": "sent",
        "reasons": ["accommodation"],
        "consent": {"status": "given", "recorded_at": "2025-05-01"},
    }


def test_pseudonymised_caseload_and_outcome_drop_identifying_fields() -> None:
    caseload = one_grant(
        resource="caseload",
        fields=["local_case_id", "subject_ref", "offender_manager_ref", "status"],
        level="pseudonymised",
    )
    row = {
        "local_case_id": "CRC-9",
        "subject_ref": "s1",
        "offender_manager_ref": "OM-1",
        "status": "active",
    }
    assert disclose(row, caseload, pseudonym="psn1_y", today=TODAY) == {
        "subject_ref": "psn1_y",
        "status": "active",
    }
    outcome = one_grant(
        resource="outcome", fields=["ref", "type", "detail", "recorded_by"], level="pseudonymised"
    )
    row = {"ref": "o1", "type": "engaged", "detail": "Met Ann at home", "recorded_by": "J Bloggs"}
    assert disclose(row, outcome, pseudonym=None, today=TODAY) == {"ref": "o1", "type": "engaged"}


def test_unvetted_nested_structures_are_withheld_at_pseudonymised_level() -> None:
    decision = one_grant(fields=["gender", "cohorts"], level="pseudonymised")
    record = {"gender": {"code": "F", "noted_by": "PC 1"}, "cohorts": ["PPO", {"x": "y"}]}
    assert disclose(record, decision, pseudonym=None, today=TODAY) == {}


def test_fields_outside_the_decision_never_leave() -> None:
    decision = one_grant(fields=["area"])
    assert disclose({**SUBJECT, "extra": "x"}, decision, pseudonym=None, today=TODAY) == {
        "area": "BIR"
    }


def test_a_denied_decision_discloses_nothing(demo_policy: PolicySet) -> None:
    denied = decision_for(demo_policy, agency="VSP-MENTOR")
    with pytest.raises(ValueError, match="denied"):
        disclose(SUBJECT, denied, pseudonym=None, today=TODAY)


def test_demo_referral_flow_before_and_after_consent(demo_policy: PolicySet) -> None:
    def read(context: RecordContext) -> dict[str, Any]:
        decision = decide(
            demo_policy,
            agency="VSP-HOUSING",
            agency_kind="voluntary",
            action="read",
            resource="subject",
            purpose="pre-cj-referral",
            record=context,
            now=NOW,
        )
        return disclose(SUBJECT, decision, pseudonym="psn1_h", today=TODAY)

    active = RecordContext(active_referrals_to=frozenset({"VSP-HOUSING"}))
    assert read(active) == {
        "ref": "psn1_h",
        "age_band": "25-34",
        "area": "BIR",
        "risk": {"reoffending_band": "high", "serious_harm_level": "medium"},
        "needs": {"accommodation": "high", "ete": "medium"},
    }
    consented = RecordContext(
        active_referrals_to=frozenset({"VSP-HOUSING"}),
        accepted_with_consent_by=frozenset({"VSP-HOUSING"}),
    )
    after = read(consented)
    assert after["ref"] == "psn1_h"
    assert after["given_name"] == "Ann" and after["postcode"] == "b152tt"
    assert "identifiers" not in after and "linked_victims" not in after
