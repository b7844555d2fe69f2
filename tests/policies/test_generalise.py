"""Postcode districts are parsed, never sliced; age bands are right at every boundary."""

from __future__ import annotations

from datetime import date

import pytest

from policies.generalise import age_band, age_on, postcode_district


@pytest.mark.parametrize(
    ("postcode", "district"),
    [
        ("b11aa", "B1"),
        ("B1 1AA", "B1"),
        ("WS1 1AA", "WS1"),
        ("b152tt", "B15"),
        ("B15 2TT", "B15"),
        ("  b15   2tt ", "B15"),
        ("CV1 5FB", "CV1"),
        ("WV10 6QS", "WV10"),
        ("DY1 1HR", "DY1"),
        ("B901AB", "B90"),
        ("EC1A 1BB", "EC1A"),
        ("W1A 0AX", "W1A"),
        ("SW1A2AA", "SW1A"),
        ("M1 1AE", "M1"),
        ("GIR 0AA", "GIR"),
    ],
)
def test_postcode_district(postcode: str, district: str) -> None:
    assert postcode_district(postcode) == district


@pytest.mark.parametrize(
    "postcode",
    [
        "",
        "B1",
        "B15",
        "B15 2T",
        "B15 2TTX",
        "B15 22T",
        "B15 2CI",  # C and I never appear in an inward code
        "1B1 1AA",
        "QB1 1AA",  # Q never starts a postcode
        "BBB1 1AA",
        "B-15 2TT",
        "GIR 1AA",
        "not a postcode",
        "B15\u00a02TT\u00a0X",
        None,
        1234,
    ],
)
def test_unparseable_postcodes_are_dropped_not_truncated(postcode: object) -> None:
    assert postcode_district(postcode) is None


TODAY = date(2025, 6, 15)


def born_years_ago(years: int, days_later: int = 0) -> date:
    return date(TODAY.year - years, TODAY.month, TODAY.day + days_later)


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "0-9"),
        (9, "0-9"),
        (10, "10-17"),
        (17, "10-17"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (34, "25-34"),
        (35, "35-44"),
        (44, "35-44"),
        (45, "45-54"),
        (54, "45-54"),
        (55, "55+"),
        (90, "55+"),
    ],
)
def test_age_band_boundaries(age: int, band: str) -> None:
    assert age_band(born_years_ago(age), TODAY) == band


def test_a_birthday_tomorrow_has_not_happened_yet() -> None:
    assert age_on(born_years_ago(18, days_later=1), TODAY) == 17
    assert age_band(born_years_ago(18, days_later=1), TODAY) == "10-17"
    assert age_band(born_years_ago(18), TODAY) == "18-24"
    assert age_band(born_years_ago(55, days_later=1), TODAY) == "45-54"


def test_leap_day_birthdays() -> None:
    born = date(2004, 2, 29)
    assert age_on(born, date(2022, 2, 28)) == 17
    assert age_on(born, date(2022, 3, 1)) == 18


def test_a_birth_date_in_the_future_has_no_band() -> None:
    assert age_band(date(2030, 1, 1), TODAY) is None
