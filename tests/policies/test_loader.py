"""The agreement loader: demo files load, each bad file is rejected precisely, none half-loads."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from policies.agreements import (
    agreement_from_document,
    check_directory,
    load_agreement_file,
    load_agreement_text,
    load_directory,
)
from policies.engine import RecordContext, compile_policy, decide
from policies.model import Agreement, AgreementError, Retention
from policies.vocabulary import DEMO_AGENCIES
from tests.policies.conftest import AGREEMENTS_DIR, HERE, NOW

BAD = HERE / "bad_agreements"
GOOD = HERE / "good_agreement.yaml"

# file, line, field path, a distinctive part of the message
BAD_CASES = [
    ("yaml_syntax.yaml", 19, "", "while parsing a flow sequence (from line 18)"),
    ("unsafe_tag.yaml", 3, "", "could not determine a constructor"),
    ("not_a_mapping.yaml", 1, "", "must be a mapping of fields, found list"),
    ("empty.yaml", 1, "", "the file is empty"),
    ("duplicate_key.yaml", 4, "title", "duplicate key 'title' (first on line 3)"),
    ("unknown_top_key.yaml", 16, "owner", "Unknown field."),
    ("unknown_grant_key.yaml", 26, "grants.0.scope", "Unknown field."),
    ("unknown_condition_key.yaml", 24, "grants.0.conditions.postcodes", "Unknown field."),
    ("missing_title.yaml", 1, "title", "Missing data for required field."),
    ("bad_agreement_id.yaml", 1, "id", "must be a lower-case slug"),
    ("version_zero.yaml", 2, "version", "greater than or equal to 1"),
    ("version_not_integer.yaml", 2, "version", "Not a valid integer."),
    ("impossible_date.yaml", 12, "valid_from", "Not a valid date."),
    ("datetime_not_date.yaml", 12, "valid_from", "Not a valid date."),
    ("valid_until_before_from.yaml", 13, "valid_until", "2014-03-31 is before valid_from"),
    ("review_after_expiry.yaml", 14, "review_by", "outside the validity"),
    ("retention_garbage.yaml", 15, "retention", "'two years' is not an ISO 8601 date duration"),
    ("retention_time_of_day.yaml", 15, "retention", "'PT12H' is not an ISO 8601 date duration"),
    ("bad_party_role.yaml", 6, "parties.1.role", "'processor' is not one of"),
    ("unknown_party_agency.yaml", 7, "parties.2.agency", "unknown agency code 'VSP-GARDEN'"),
    ("unknown_recipient_agency.yaml", 18, "grants.0.recipients.1", "unknown agency code 'NACRO'"),
    ("recipient_not_party.yaml", 18, "grants.0.recipients.1", "CRC is not a party"),
    (
        "kind_without_party.yaml",
        18,
        "grants.0.recipients.0",
        "no party to this agreement is of kind 'yot'",
    ),
    ("unknown_kind.yaml", 18, "grants.0.recipients.0", "unknown agency kind 'charity'"),
    ("undeclared_purpose.yaml", 19, "grants.0.purposes.1", "purpose 'marketing' is not declared"),
    ("unknown_resource.yaml", 20, "grants.0.resource", "'offender' is not one of"),
    ("unsupported_action.yaml", 21, "grants.0.actions.1", "'create' is not supported on subject"),
    ("unknown_action.yaml", 21, "grants.0.actions.1", "'delete' is not one of"),
    ("unknown_cohort.yaml", 23, "grants.0.conditions.cohorts.1", "'ROBBERY' is not one of"),
    ("unknown_area.yaml", 23, "grants.0.conditions.areas.1", "'LON' is not one of"),
    (
        "unknown_relationship.yaml",
        23,
        "grants.0.conditions.relationships.0",
        "'friend_of_recipient'",
    ),
    ("empty_condition_list.yaml", 23, "grants.0.conditions.cohorts", "at least one cohort"),
    ("min_age_above_max.yaml", 25, "grants.0.conditions.max_age", "max_age 17 is below min_age 18"),
    ("unknown_field.yaml", 24, "grants.0.fields.3", "subject has no field 'date_of_death'"),
    ("unknown_group.yaml", 24, "grants.0.fields.1", "subject has no field group 'health'"),
    ("fields_not_a_list.yaml", 24, "grants.0.fields", "Not a valid list."),
    (
        "victim_to_voluntary.yaml",
        24,
        "grants.0.fields.1",
        "linked_victims may not be granted to voluntary-sector recipient VSP-MENTOR",
    ),
    (
        "victim_to_voluntary_kind.yaml",
        24,
        "grants.0.fields.1",
        "linked_victims may not be granted to voluntary-sector recipient kind:voluntary",
    ),
    ("bad_level.yaml", 25, "grants.0.level", "'anonymised' is not one of"),
    ("metrics_not_aggregate.yaml", 25, "grants.0.level", "level must be aggregate"),
    ("age_band_without_dob.yaml", 26, "grants.0.age_band", "needs date_of_birth"),
    ("age_band_not_boolean.yaml", 26, "grants.0.age_band", "Not a valid boolean."),
    ("search_not_identified.yaml", 21, "grants.0.actions.1", "at level identified only"),
    ("duplicate_grant_id.yaml", 27, "grants.1.id", "duplicate grant id 'subject-referred'"),
]


def test_demo_agreements_load(demo_agreements: list[Agreement]) -> None:
    assert sorted(a.label for a in demo_agreements) == [
        "core-iom@3",
        "dv-perpetrator-programme@1",
        "legacy-probation-trust@3",
        "performance-reporting@1",
        "pre-cj-referral@1",
    ]
    for agreement in demo_agreements:
        assert agreement.source.endswith(f"{agreement.id}.yaml")


def test_the_base_of_the_bad_corpus_is_good() -> None:
    """Each bad file is this file with one mutation, so each rejection is that mutation's."""
    agreement = load_agreement_file(GOOD, DEMO_AGENCIES)
    assert agreement.label == "bad-example@1"
    assert agreement.retention == Retention(years=1)


def test_every_bad_file_is_covered_by_the_table() -> None:
    covered = {case[0] for case in BAD_CASES} | {"multiple_problems.yaml"}
    assert covered == {p.name for p in BAD.iterdir()}
    assert len(BAD_CASES) >= 20


@pytest.mark.parametrize(("name", "line", "field", "message"), BAD_CASES, ids=lambda c: str(c))
def test_bad_file_is_rejected_precisely(name: str, line: int, field: str, message: str) -> None:
    with pytest.raises(AgreementError) as raised:
        load_agreement_file(BAD / name, DEMO_AGENCIES)
    [problem] = raised.value.problems
    assert (problem.file, problem.line, problem.field) == (str(BAD / name), line, field)
    assert message in problem.message
    assert f"{BAD / name}:{line}" in str(raised.value)


def test_every_problem_in_a_file_is_reported_at_once() -> None:
    with pytest.raises(AgreementError) as raised:
        load_agreement_file(BAD / "multiple_problems.yaml", DEMO_AGENCIES)
    found = [(p.line, p.field) for p in raised.value.problems]
    assert found == [
        (2, "version"),
        (19, "grants.0.purposes.0"),
        (24, "grants.0.fields.1"),
        (26, "grants.0.colour"),
    ]


def test_a_failed_load_changes_nothing(demo_agreements: list[Agreement]) -> None:
    policy = compile_policy(demo_agreements)
    context = RecordContext(managed_by=frozenset({"NPS"}), age=30, area="BIR")

    def decision() -> object:
        return decide(
            policy,
            agency="NPS",
            agency_kind="nps",
            action="read",
            resource="subject",
            purpose="iom-case-management",
            record=context,
            now=NOW,
        )

    before = decision()
    for bad in BAD.iterdir():
        with pytest.raises(AgreementError):
            load_agreement_file(bad, DEMO_AGENCIES)
    assert decision() == before
    assert policy.agreements == tuple(demo_agreements)


def test_a_directory_with_one_bad_file_loads_only_the_good_ones(tmp_path: Path) -> None:
    for file in AGREEMENTS_DIR.glob("*.yaml"):
        shutil.copy(file, tmp_path)
    shutil.copy(BAD / "recipient_not_party.yaml", tmp_path)
    agreements, problems = check_directory(tmp_path, DEMO_AGENCIES)
    assert len(agreements) == 5 and "bad-example" not in {a.id for a in agreements}
    assert [(Path(p.file).name, p.line) for p in problems] == [("recipient_not_party.yaml", 18)]
    with pytest.raises(AgreementError):
        load_directory(tmp_path, DEMO_AGENCIES)


def test_the_same_agreement_id_in_two_files_is_a_problem(tmp_path: Path) -> None:
    shutil.copy(GOOD, tmp_path / "a.yaml")
    shutil.copy(GOOD, tmp_path / "b.yaml")
    agreements, problems = check_directory(tmp_path, DEMO_AGENCIES)
    assert [a.source for a in agreements] == [str(tmp_path / "a.yaml")]
    [problem] = problems
    assert (problem.file, problem.line, problem.field) == (str(tmp_path / "b.yaml"), 1, "id")
    assert "also defined in" in problem.message


def test_document_round_trip(demo_agreements: list[Agreement]) -> None:
    for agreement in demo_agreements:
        document = agreement.to_document()
        assert document["valid_from"] == agreement.valid_from.isoformat()
        rebuilt = agreement_from_document(document, DEMO_AGENCIES)
        assert rebuilt == agreement
        assert rebuilt.source == "db"
        assert rebuilt.to_document() == document


def test_a_stored_document_is_checked_like_a_file() -> None:
    document = load_agreement_file(GOOD, DEMO_AGENCIES).to_document()
    document["grants"][0]["fields"].append("linked_victims")
    document["valid_until"] = "2014-01-01"
    with pytest.raises(AgreementError) as raised:
        agreement_from_document(document, DEMO_AGENCIES, source="db:17")
    assert {(p.file, p.line, p.field) for p in raised.value.problems} == {
        ("db:17", None, "grants.0.fields.3"),
        ("db:17", None, "valid_until"),
    }


def test_known_agencies_may_be_a_mapping_of_kinds() -> None:
    text = GOOD.read_text().replace("VSP-MENTOR", "SAFE-HOMES")
    known = {"WMP": "police", "SAFE-HOMES": "voluntary"}
    assert load_agreement_text(text, known, source="x").parties[1].agency == "SAFE-HOMES"
    victims = text.replace("[ref, area, needs]", "[ref, linked_victims]")
    with pytest.raises(AgreementError, match="voluntary-sector recipient SAFE-HOMES"):
        load_agreement_text(victims, known, source="x")


def test_victim_fields_fail_closed_when_a_recipient_kind_is_unknown() -> None:
    """A plain set of codes gives no kind for a non-demo agency: it might be voluntary."""
    text = (
        GOOD.read_text()
        .replace("VSP-MENTOR", "NEWCO")
        .replace("[ref, area, needs]", "[ref, linked_victims]")
    )
    with pytest.raises(AgreementError, match="NEWCO: its agency kind is unknown"):
        load_agreement_text(text, {"WMP", "NEWCO"}, source="x")


def test_groups_expand_and_duplicates_collapse() -> None:
    text = GOOD.read_text().replace(
        "[ref, area, needs]", "[ref, group:location, area, group:contact]"
    )
    grant = load_agreement_text(text, DEMO_AGENCIES, source="x").grants[0]
    assert grant.fields == ("ref", "area", "policing_unit", "address_line", "postcode", "phone")


@pytest.mark.parametrize(
    ("text", "expected", "after"),
    [
        ("P2Y", Retention(years=2), date(2027, 2, 28)),
        ("P6M", Retention(months=6), date(2025, 8, 28)),
        ("P1Y6M", Retention(years=1, months=6), date(2026, 8, 28)),
        ("P2W", Retention(weeks=2), date(2025, 3, 14)),
        ("P90D", Retention(days=90), date(2025, 5, 29)),
    ],
)
def test_retention_parses_iso_durations(text: str, expected: Retention, after: date) -> None:
    assert Retention.parse(text) == expected
    assert str(expected) == text
    assert expected.after(date(2025, 2, 28)) == after


@pytest.mark.parametrize("text", ["", "P", "2Y", "P0Y", "PT1H", "P1.5Y", "p2y", "P2Y ", "P-1Y"])
def test_retention_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"retention|ISO 8601"):
        Retention.parse(text)


def test_retention_clamps_month_ends() -> None:
    assert Retention(months=1).after(date(2025, 1, 31)) == date(2025, 2, 28)
    assert Retention(years=1).after(date(2024, 2, 29)) == date(2025, 2, 28)
