"""Generalised quasi-identifiers: postcode district instead of postcode, age band or year of
birth instead of date of birth.

A postcode is parsed, not sliced: the inward code is always a digit and two letters, so the
outward code is whatever precedes it, and anything that does not parse as a UK postcode is
dropped rather than truncated (a truncated typo could still point at one street).
"""

from __future__ import annotations

import re
from datetime import date

from policies.vocabulary import AGE_BANDS

_OUTWARD = (
    r"(?:[A-PR-UWYZ][0-9]{1,2}"
    r"|[A-PR-UWYZ][A-HK-Y][0-9]{1,2}"
    r"|[A-PR-UWYZ][0-9][A-HJKPSTUW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY])"
)
_INWARD = r"[0-9][ABD-HJLNP-UW-Z]{2}"
_POSTCODE = re.compile(rf"(?P<outward>{_OUTWARD}|GIR)(?P<inward>{_INWARD})", re.ASCII)


def postcode_district(postcode: object) -> str | None:
    """The outward code ("B15" for "b15 2tt"), or None when `postcode` is not a UK postcode."""
    if not isinstance(postcode, str):
        return None
    match = _POSTCODE.fullmatch(re.sub(r"\s+", "", postcode).upper())
    if match is None or (match["outward"] == "GIR" and match["inward"] != "0AA"):
        return None
    return match["outward"]


def age_on(date_of_birth: date, today: date) -> int:
    """Age in completed years on `today`."""
    birthday_passed = (today.month, today.day) >= (date_of_birth.month, date_of_birth.day)
    return today.year - date_of_birth.year - (0 if birthday_passed else 1)


def age_band(date_of_birth: date, today: date) -> str | None:
    """The band (10-17, 18-24, 25-34, 35-44, 45-54, 55+) or None for an impossible age."""
    age = age_on(date_of_birth, today)
    if age < 0:
        return None
    for low, high in AGE_BANDS:
        if high is None and age >= low:
            return f"{low}+"
        if high is not None and low <= age <= high:
            return f"{low}-{high}"
    return f"0-{AGE_BANDS[0][0] - 1}"
