"""Identifier normalisation: every variant of one identifier gives one canonical value."""

from __future__ import annotations

import pytest

from policies.identifiers import IdentifierError, normalise_identifier, pnc_check_character


def test_pnc_check_character_worked_example() -> None:
    # 120012345 = 23 * 5217928 + 1, and position 1 of ZABCDEFGHJKLMNPQRTUVWXY is A
    assert pnc_check_character(12, 12345) == "A"
    assert pnc_check_character(0, 0) == "Z"
    assert pnc_check_character(99, 9_999_999) == "ZABCDEFGHJKLMNPQRTUVWXY"[999999999 % 23]


@pytest.mark.parametrize(
    "variant",
    ["12/0012345A", "2012/0012345A", "12/12345A", "2012/12345a", " 12 / 12345 a ", "12/0012345a"],
)
def test_pnc_variants_normalise_to_one_value(variant: str) -> None:
    assert normalise_identifier("pnc", variant) == "12/0012345A"
    assert normalise_identifier("PNC", variant) == "12/0012345A"


@pytest.mark.parametrize("check", sorted(set("ZABCDEFGHJKLMNPQRTUVWXY") - {"A"}))
def test_pnc_wrong_check_character_is_refused(check: str) -> None:
    with pytest.raises(IdentifierError, match="check letter does not match"):
        normalise_identifier("pnc", f"12/0012345{check}")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "12/0012345",
        "123/0012345A",
        "12/00123456A7",
        "120012345A",
        "12-0012345A",
        "12/00I2345A",
        "12/\u0661\u0662\u0663A",  # Arabic-Indic digits
    ],
)
def test_malformed_pnc_is_refused(value: str) -> None:
    with pytest.raises(IdentifierError, match="PNC id must be"):
        normalise_identifier("pnc", value)


@pytest.mark.parametrize(
    ("scheme", "value"),
    [("nomis", "G3731\u00df"), ("nomis", "\u017f1234AB"), ("crn", "X12345\u0131"),
     ("pnc", "12/0012345\ufb00")],
)
def test_letters_that_upper_case_into_ascii_are_refused(scheme: str, value: str) -> None:
    """str.upper() makes "\\u00df" "SS" and "\\u017f" "S": they would match another id."""
    with pytest.raises(IdentifierError):
        normalise_identifier(scheme, value)


def test_error_messages_do_not_repeat_the_identifier() -> None:
    with pytest.raises(IdentifierError) as raised:
        normalise_identifier("pnc", "12/0012345B")
    assert "0012345" not in str(raised.value)


@pytest.mark.parametrize(
    ("value", "canonical"), [("x123456", "X123456"), (" X 123 456", "X123456")]
)
def test_crn(value: str, canonical: str) -> None:
    assert normalise_identifier("crn", value) == canonical


@pytest.mark.parametrize("value", ["X12345", "X1234567", "1234567", "XX23456"])
def test_bad_crn(value: str) -> None:
    with pytest.raises(IdentifierError, match="CRN must be"):
        normalise_identifier("crn", value)


@pytest.mark.parametrize(("value", "canonical"), [("a1234bc", "A1234BC"), ("A 1234 BC", "A1234BC")])
def test_nomis(value: str, canonical: str) -> None:
    assert normalise_identifier("nomis", value) == canonical


@pytest.mark.parametrize("value", ["A123BC", "A12345C", "11234BC", "A1234B1"])
def test_bad_nomis(value: str) -> None:
    with pytest.raises(IdentifierError, match="NOMIS prison number must be"):
        normalise_identifier("nomis", value)


def test_unknown_scheme() -> None:
    with pytest.raises(IdentifierError, match="unknown identifier scheme"):
        normalise_identifier("nino", "AB123456C")
