"""Disclosure: turn a full record into what one decision allows one recipient to see.

Pure and allow-list based: a field is released only if the decision names it, and at
pseudonymised level only in the shape declared safe in `policies.vocabulary` (structured
fields keep only their listed keys; an unlisted nested structure is withheld, not passed on).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from policies.engine import Decision
from policies.generalise import age_band, postcode_district
from policies.vocabulary import (
    PSEUDONYMISED,
    PSEUDONYMISED_KEYS,
    PSEUDONYMISED_WITHHELD,
    SUBJECT_KEY,
)

# Values that carry no nested structure; dates and times are scalars here.
_SCALARS = (str, int, float, bool, type(None), date)


def disclose(
    record: Mapping[str, Any], decision: Decision, *, pseudonym: str | None, today: date
) -> dict[str, Any]:
    """The part of `record` the decision releases; refuses a denied decision outright."""
    if not decision.permitted:
        raise ValueError("a denied decision releases nothing; do not call disclose for it")
    released: dict[str, Any] = {}
    for name, value in record.items():
        level = decision.fields.get(name)
        if level == PSEUDONYMISED:
            released.update(_pseudonymised(decision, name, value, pseudonym, today))
        elif level is not None:
            released[name] = _copied(value)
    return released


def _pseudonymised(
    decision: Decision, name: str, value: Any, pseudonym: str | None, today: date
) -> dict[str, Any]:
    resource = decision.resource
    if name == SUBJECT_KEY.get(resource):
        return {name: pseudonym} if pseudonym is not None else {}
    if name in PSEUDONYMISED_WITHHELD.get(resource, ()):
        return {}
    if name == "date_of_birth":
        born = _as_date(value)
        if born is None:
            return {}
        if decision.age_band:
            band = age_band(born, today)
            return {"age_band": band} if band else {}
        return {"year_of_birth": born.year}
    if name == "postcode":
        district = postcode_district(value)
        return {"postcode_district": district} if district else {}
    allowed = PSEUDONYMISED_KEYS.get((resource, name))
    if allowed is not None:
        return {name: _keep(value, allowed)}
    return {name: _copied(value)} if _is_flat(value) else {}


def _copied(value: Any) -> Any:
    """A copy of a record's JSON-like value, so the caller's record stays the caller's.
    Scalars (dates included) are immutable and shared; `copy.deepcopy` would cost a third of
    a disclosure for nothing more."""
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copied(item) for item in value)
    return value


def _keep(value: Any, allowed: frozenset[str]) -> Any:
    """Keep the allowed scalar keys of a dict, or of each dict in a list."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k in allowed and isinstance(v, _SCALARS)}
    if isinstance(value, list):
        return [_keep(item, allowed) for item in value if isinstance(item, Mapping)]
    return None


def _is_flat(value: Any) -> bool:
    """A scalar or a list of scalars: nothing nested that could carry unvetted detail."""
    if isinstance(value, list | tuple):
        return all(isinstance(item, _SCALARS) for item in value)
    return isinstance(value, _SCALARS)


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
