"""Canonical forms of the criminal-justice identifiers partners send.

Identity resolution matches on these, so every variant a partner system might send ("2012/123A",
"12/0000123a", " 12 / 123 A ") must reduce to one value, and a mistyped PNC must be refused
rather than matched to nobody (or to somebody else). Error messages describe the defect without
repeating the value, since an identifier is personal data and messages end up in logs.
"""

from __future__ import annotations

import re
import string

PNC_CHECK_LETTERS = "ZABCDEFGHJKLMNPQRTUVWXY"
_PNC = re.compile(r"(\d{2}|\d{4})/(\d{1,7})([A-Z])", re.ASCII)
_CRN = re.compile(r"[A-Z]\d{6}", re.ASCII)
_NOMIS = re.compile(r"[A-Z]\d{4}[A-Z]{2}", re.ASCII)


class IdentifierError(ValueError):
    """An identifier that cannot be normalised; the message says what is wrong with it."""


def pnc_check_character(year2: int, serial: int) -> str:
    """The PNC check letter: the number formed by the 2-digit year and 7-digit serial, mod 23."""
    if not 0 <= year2 <= 99 or not 0 <= serial <= 9_999_999:
        raise ValueError("PNC year must be 0-99 and serial 0-9999999")
    return PNC_CHECK_LETTERS[int(f"{year2:02d}{serial:07d}") % 23]


_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def normalise_identifier(scheme: str, value: str) -> str:
    """The canonical form of `value` under `scheme` (pnc, crn or nomis)."""
    if not isinstance(value, str):
        raise IdentifierError(f"{scheme} identifier must be text")
    # ASCII letters only: str.upper() turns some others into ASCII ones ("ß" into "SS"),
    # which would then match someone else's identifier; the schemes' patterns refuse the rest.
    compact = re.sub(r"\s+", "", value).translate(_ASCII_UPPER)
    normaliser = _SCHEMES.get(scheme.lower() if isinstance(scheme, str) else "")
    if normaliser is None:
        raise IdentifierError(f"unknown identifier scheme (known: {', '.join(sorted(_SCHEMES))})")
    return normaliser(compact)


def _pnc(compact: str) -> str:
    match = _PNC.fullmatch(compact)
    if match is None:
        raise IdentifierError(
            "PNC id must be a 2- or 4-digit year, '/', a serial of up to 7 digits and a "
            "check letter, e.g. 12/0012345C"
        )
    year, serial, check = match.groups()
    year2, number = int(year[-2:]), int(serial)
    expected = pnc_check_character(year2, number)
    if check != expected:
        raise IdentifierError("PNC check letter does not match the year and serial number")
    return f"{year2:02d}/{number:07d}{check}"


def _crn(compact: str) -> str:
    if _CRN.fullmatch(compact) is None:
        raise IdentifierError("CRN must be one letter followed by six digits, e.g. X123456")
    return compact


def _nomis(compact: str) -> str:
    if _NOMIS.fullmatch(compact) is None:
        raise IdentifierError(
            "NOMIS prison number must be a letter, four digits and two letters, e.g. A1234BC"
        )
    return compact


_SCHEMES = {"pnc": _pnc, "crn": _crn, "nomis": _nomis}
