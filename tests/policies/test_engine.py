"""Decisions: deny by default, each reason code, explanations, the combination rule, list scopes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from policies.engine import (
    Decision,
    PolicySet,
    RecordContext,
    compile_policy,
    decide,
    explain,
    list_scope,
)
from tests.policies.conftest import NOW
from tests.policies.helpers import agreement, grant

PPO_ADULT = RecordContext(cohorts=frozenset({"PPO"}), area="BIR", age=30)


def run(
    policy: PolicySet,
    agency: str,
    kind: str,
    action: str,
    resource: str,
    purpose: str,
    record: RecordContext | None = PPO_ADULT,
    now: datetime = NOW,
) -> Decision:
    return decide(
        policy,
        agency=agency,
        agency_kind=kind,
        action=action,
        resource=resource,
        purpose=purpose,
        record=record,
        now=now,
    )


def codes(decision: Decision) -> set[tuple[str, str, str]]:
    return {(r.agreement, r.grant, r.code) for r in decision.reasons}


def test_purposes_are_the_declared_ones_plus_ig_audit(demo_policy: PolicySet) -> None:
    assert demo_policy.purposes == {
        "iom-case-management",
        "caseload-sync",
        "pre-cj-referral",
        "dv-perpetrator-programme",
        "performance-reporting",
        "ig-audit",
    }


def test_statutory_partner_reads_its_own_caseload(demo_policy: PolicySet) -> None:
    record = replace(PPO_ADULT, managed_by=frozenset({"NPS"}))
    decision = run(demo_policy, "NPS", "nps", "read", "subject", "iom-case-management", record)
    assert decision.permitted
    assert decision.basis == (("core-iom@3", "subject-own-caseload"),)
    assert decision.level == "identified"
    assert decision.fields["linked_victims"] == "identified"
    assert "ethnicity" not in decision.fields
    # the expired legacy agreement is still a candidate, and says why it did not apply
    assert ("legacy-probation-trust@3", "subject-all", "agreement_expired") in codes(decision)
    assert "expired on 2015-01-31" in explain(decision)


def test_expired_agreement_denies(demo_policy: PolicySet) -> None:
    decision = run(demo_policy, "NPS", "nps", "read", "caseload", "iom-case-management")
    assert not decision.permitted
    assert codes(decision) == {
        ("legacy-probation-trust@3", "caseload-all", "agreement_expired"),
        ("core-iom@3", "caseload-submit", "action_not_granted"),
        ("core-iom@3", "caseload-submit", "purpose_not_granted"),
        ("core-iom@3", "caseload-own", "purpose_not_granted"),
    }
    assert decision.fields == {} and decision.basis == () and decision.level is None
    assert "agreement_expired" in explain(decision)
    assert explain(decision).startswith("DENY")


def test_not_yet_valid_agreement_denies_and_the_old_one_applies_before_it(
    demo_policy: PolicySet,
) -> None:
    before_crc = datetime(2014, 6, 1, tzinfo=UTC)
    decision = run(
        demo_policy, "NPS", "nps", "read", "subject", "iom-case-management", now=before_crc
    )
    assert decision.permitted
    assert decision.basis == (("legacy-probation-trust@3", "subject-all"),)
    assert ("core-iom@3", "subject-own-caseload", "agreement_not_yet_valid") in codes(decision)
    assert "valid from 2015-02-01" in explain(decision)


def test_validity_is_inclusive_on_both_days() -> None:
    policy = compile_policy([agreement(grant())])
    on = {
        date(2015, 1, 31): "agreement_not_yet_valid",
        date(2015, 2, 1): None,
        date(2027, 3, 31): None,
        date(2027, 4, 1): "agreement_expired",
    }
    for day, code in on.items():
        # late in the UTC day: a local-time conversion would move it to the next day
        when = datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC)
        decision = run(policy, "WMP", "police", "read", "subject", "testing", now=when)
        assert decision.permitted is (code is None), day
        if code:
            assert {r.code for r in decision.reasons} == {code}


def test_wrong_purpose_denies(demo_policy: PolicySet) -> None:
    record = replace(PPO_ADULT, active_referrals_to=frozenset({"VSP-MENTOR"}))
    decision = run(
        demo_policy,
        "VSP-MENTOR",
        "voluntary",
        "read",
        "subject",
        "dv-perpetrator-programme",
        record,
    )
    assert not decision.permitted
    assert codes(decision) == {
        ("pre-cj-referral@1", "subject-referred", "purpose_not_granted"),
        ("pre-cj-referral@1", "subject-consented-contact", "purpose_not_granted"),
    }
    assert "purpose_not_granted - grant is for purpose pre-cj-referral" in explain(decision)


def test_action_not_granted(demo_policy: PolicySet) -> None:
    decision = run(demo_policy, "VSP-MENTOR", "voluntary", "list", "subject", "pre-cj-referral")
    assert not decision.permitted
    assert {r.code for r in decision.reasons} == {"action_not_granted"}
    assert "grant allows read" in explain(decision)


def test_no_agreement(demo_policy: PolicySet) -> None:
    decision = run(demo_policy, "VSP-MENTOR", "voluntary", "read", "caseload", "pre-cj-referral")
    assert not decision.permitted
    [reason] = decision.reasons
    assert reason.code == "no_agreement"
    assert "no_agreement" in explain(decision)


def test_cohort_not_met(demo_policy: PolicySet) -> None:
    record = replace(PPO_ADULT, cohorts=frozenset({"CSE"}))
    decision = run(demo_policy, "WMP", "police", "read", "subject", "iom-case-management", record)
    assert not decision.permitted
    assert codes(decision) == {
        ("core-iom@3", "subject-police-cohorts", "cohort_not_met"),
        ("core-iom@3", "subject-own-caseload", "relationship_not_met"),
    }
    text = explain(decision)
    assert "cohort_not_met - needs cohort DA or FEMALE or GANG" in text
    assert "record has CSE" in text


def test_police_see_their_cohorts_without_a_caseload_relationship(demo_policy: PolicySet) -> None:
    decision = run(demo_policy, "WMP", "police", "read", "subject", "iom-case-management")
    assert decision.permitted
    assert decision.basis == (("core-iom@3", "subject-police-cohorts"),)


def test_area_not_met(demo_policy: PolicySet) -> None:
    coventry = RecordContext(area="COV", cohorts=frozenset({"PPO"}))
    decision = run(
        demo_policy,
        "LA-BIR",
        "local_authority",
        "read",
        "metrics",
        "performance-reporting",
        coventry,
    )
    assert not decision.permitted
    assert codes(decision) == {("performance-reporting@1", "metrics-birmingham", "area_not_met")}
    assert "needs area BIR; record has COV" in explain(decision)
    birmingham = replace(coventry, area="BIR")
    allowed = run(
        demo_policy,
        "LA-BIR",
        "local_authority",
        "read",
        "metrics",
        "performance-reporting",
        birmingham,
    )
    assert allowed.permitted and allowed.level == "aggregate"


@pytest.mark.parametrize(("age", "permitted"), [(10, True), (17, True), (18, False), (None, False)])
def test_age_condition(demo_policy: PolicySet, age: int | None, permitted: bool) -> None:
    record = RecordContext(age=age, managed_by=frozenset({"YOT-BIR"}))
    decision = run(demo_policy, "YOT-BIR", "yot", "read", "subject", "iom-case-management", record)
    assert decision.permitted is permitted
    if not permitted:
        assert codes(decision) == {("core-iom@3", "subject-youth-caseload", "age_not_met")}
        assert f"needs age 0 to 17; record age is {age}" in explain(decision)


def test_relationship_not_met(demo_policy: PolicySet) -> None:
    decision = run(demo_policy, "VSP-MENTOR", "voluntary", "read", "subject", "pre-cj-referral")
    assert not decision.permitted
    assert {r.code for r in decision.reasons} == {"relationship_not_met"}
    text = explain(decision)
    assert "needs active_referral_to_recipient for VSP-MENTOR" in text
    assert "needs accepted_referral_with_consent for VSP-MENTOR" in text


def test_a_referral_to_another_provider_does_not_count(demo_policy: PolicySet) -> None:
    record = replace(PPO_ADULT, active_referrals_to=frozenset({"VSP-HOUSING"}))
    decision = run(
        demo_policy, "VSP-MENTOR", "voluntary", "read", "subject", "pre-cj-referral", record
    )
    assert not decision.permitted


def test_every_unmet_condition_is_reported() -> None:
    conditions = {
        "cohorts": ["DA"],
        "areas": ["WAL"],
        "min_age": 18,
        "relationships": ["in_recipient_caseload"],
    }
    policy = compile_policy([agreement(grant(conditions=conditions))])
    record = RecordContext(cohorts=frozenset({"PPO"}), area="BIR", age=16)
    decision = run(policy, "WMP", "police", "read", "subject", "testing", record)
    assert [r.code for r in decision.reasons] == [
        "cohort_not_met",
        "area_not_met",
        "age_not_met",
        "relationship_not_met",
    ]


def test_kind_grants_reach_parties_of_that_kind_only(demo_policy: PolicySet) -> None:
    record = RecordContext(age=15, managed_by=frozenset({"YOT-COV", "YOT-DUD"}))
    coventry = run(demo_policy, "YOT-COV", "yot", "read", "subject", "iom-case-management", record)
    assert coventry.permitted
    dudley = run(demo_policy, "YOT-DUD", "yot", "read", "subject", "iom-case-management", record)
    assert not dudley.permitted
    assert [r.code for r in dudley.reasons] == ["no_agreement"]


def test_combination_rule_in_the_demo_referral_agreement(demo_policy: PolicySet) -> None:
    referred = replace(PPO_ADULT, active_referrals_to=frozenset({"VSP-MENTOR"}))
    first = run(
        demo_policy, "VSP-MENTOR", "voluntary", "read", "subject", "pre-cj-referral", referred
    )
    assert first.permitted and first.level == "pseudonymised"
    assert first.fields == dict.fromkeys(
        ["ref", "date_of_birth", "area", "needs", "risk"], "pseudonymised"
    )
    assert first.age_band and first.pseudonym_agreement == "pre-cj-referral"
    assert ("pre-cj-referral@1", "subject-consented-contact", "relationship_not_met") in codes(
        first
    )

    consented = replace(referred, accepted_with_consent_by=frozenset({"VSP-MENTOR"}))
    both = run(
        demo_policy, "VSP-MENTOR", "voluntary", "read", "subject", "pre-cj-referral", consented
    )
    assert both.basis == (
        ("pre-cj-referral@1", "subject-consented-contact"),
        ("pre-cj-referral@1", "subject-referred"),
    )
    assert both.level == "identified"
    assert both.fields["given_name"] == "identified"
    assert both.fields["ref"] == "pseudonymised"  # no permitting grant names ref at identified
    assert both.reasons == ()
    text = explain(both)
    assert "permitted by pre-cj-referral@1 grant subject-referred" in text
    assert "identified: given_name, family_name, phone, address_line, postcode" in text
    assert "age band" in text


def test_each_field_takes_the_most_revealing_level_of_the_grants_naming_it() -> None:
    policy = compile_policy(
        [
            agreement(
                grant(id="wide", fields=["ref", "area", "date_of_birth"], level="pseudonymised"),
                grant(id="narrow", fields=["area", "gender"], level="identified"),
            )
        ]
    )
    decision = run(policy, "WMP", "police", "read", "subject", "testing")
    assert decision.fields == {
        "ref": "pseudonymised",
        "area": "identified",
        "date_of_birth": "pseudonymised",
        "gender": "identified",
    }
    assert decision.pseudonym_agreement == "test-isa"


def test_year_of_birth_beats_age_band_when_one_grant_allows_it() -> None:
    banded = grant(id="banded", fields=["date_of_birth"], level="pseudonymised", age_band=True)
    yearly = grant(id="yearly", fields=["date_of_birth"], level="pseudonymised")
    alone = run(compile_policy([agreement(banded)]), "WMP", "police", "read", "subject", "testing")
    assert alone.age_band
    both = compile_policy([agreement(banded, yearly)])
    assert not run(both, "WMP", "police", "read", "subject", "testing").age_band


def test_aggregate_grants_never_permit_records() -> None:
    policy = compile_policy([agreement(grant(level="aggregate", actions=["read", "list"]))])
    decision = run(policy, "WMP", "police", "read", "subject", "testing")
    assert not decision.permitted
    assert [r.code for r in decision.reasons] == ["aggregate_only"]
    assert not run(policy, "WMP", "police", "list", "subject", "testing", record=None).permitted
    assert (
        list_scope(
            policy,
            agency="WMP",
            agency_kind="police",
            action="list",
            resource="subject",
            purpose="testing",
            now=NOW,
        )
        == []
    )


def test_victim_fields_never_reach_a_voluntary_caller_even_past_the_loader() -> None:
    """Defence in depth: an Agreement built by hand, bypassing the loader's rule."""
    loaded = agreement(grant(recipients=["VSP-DVPP"], fields=["ref", "cohorts"]))
    forged_grant = replace(loaded.grants[0], fields=("ref", "linked_victims"))
    forged = replace(loaded, grants=(forged_grant,))
    decision = run(compile_policy([forged]), "VSP-DVPP", "voluntary", "read", "subject", "testing")
    assert decision.permitted
    assert decision.fields == {"ref": "identified"}


def test_list_check_ignores_conditions_but_needs_a_grant(demo_policy: PolicySet) -> None:
    listing = run(demo_policy, "CRC", "crc", "list", "subject", "iom-case-management", None)
    assert listing.permitted
    assert listing.basis == (("core-iom@3", "subject-own-caseload"),)
    search = run(
        demo_policy, "VSP-HOUSING", "voluntary", "search", "subject", "pre-cj-referral", None
    )
    assert not search.permitted


def test_list_scope_gives_conditions_as_data(demo_policy: PolicySet) -> None:
    def scope(agency: str, kind: str, when: datetime = NOW) -> list[tuple[str, str]]:
        scopes = list_scope(
            demo_policy,
            agency=agency,
            agency_kind=kind,
            action="list",
            resource="subject",
            purpose="iom-case-management",
            now=when,
        )
        return [(s.grant, s.level) for s in scopes]

    assert scope("WMP", "police") == [
        ("subject-own-caseload", "identified"),
        ("subject-police-cohorts", "identified"),
    ]
    [youth] = list_scope(
        demo_policy,
        agency="YOT-BIR",
        agency_kind="yot",
        action="list",
        resource="subject",
        purpose="iom-case-management",
        now=NOW,
    )
    assert (youth.agreement, youth.max_age, youth.min_age) == ("core-iom@3", 17, None)
    assert youth.relationships == {"in_recipient_caseload"}
    assert "linked_victims" not in youth.fields
    assert scope("NPS", "nps") == [("subject-own-caseload", "identified")]  # legacy is expired
    assert scope("NPS", "nps", datetime(2014, 6, 1, tzinfo=UTC)) == [("subject-all", "identified")]
    assert scope("VSP-MENTOR", "voluntary") == []


def test_decide_is_pure_and_repeatable(demo_policy: PolicySet) -> None:
    first = run(demo_policy, "WMP", "police", "read", "subject", "iom-case-management")
    assert run(demo_policy, "WMP", "police", "read", "subject", "iom-case-management") == first


def test_naive_times_are_refused(demo_policy: PolicySet) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run(demo_policy, "WMP", "police", "read", "subject", "x", now=datetime(2025, 6, 1))


def test_one_version_of_an_agreement_per_policy() -> None:
    a = agreement(grant())
    with pytest.raises(ValueError, match="test-isa"):
        compile_policy([a, replace(a, version=2)])
