"""Rules that relate one part of an agreement to another.

They run on the raw document, alongside the marshmallow schema rather than after it, so a file
with a type error and an undeclared purpose reports both at once. Every rule therefore checks
the type of what it reads and stays silent where the schema already reports the problem.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Any

from policies.vocabulary import (
    ACTIONS,
    AGENCY_KINDS,
    AGGREGATE,
    AGGREGATE_RESOURCES,
    PSEUDONYMISED,
    RESOURCE_ACTIONS,
    RESTRICTED,
    expand_field,
)

FieldPath = tuple[str | int, ...]
Finding = tuple[FieldPath, str]


def check_rules(doc: Mapping[str, Any], kinds: Mapping[str, str | None]) -> list[Finding]:
    """Every cross-reference problem in `doc`; `kinds` maps known agency codes to their kind."""
    findings = list(_dates(doc))
    parties = dict(_parties(doc, kinds, findings))
    declared = _declared_purposes(doc, findings)
    seen_grants: dict[str, int] = {}
    for i, grant in _items(doc, "grants"):
        if not isinstance(grant, Mapping):
            continue
        at: FieldPath = ("grants", i)
        grant_id = grant.get("id")
        if isinstance(grant_id, str):
            if grant_id in seen_grants:
                first = seen_grants[grant_id]
                findings.append(((*at, "id"), f"duplicate grant id {grant_id!r} (grants.{first})"))
            seen_grants.setdefault(grant_id, i)
        for j, purpose in _items(grant, "purposes"):
            if isinstance(purpose, str) and purpose not in declared:
                findings.append(
                    (
                        (*at, "purposes", j),
                        f"purpose {purpose!r} is not declared in this agreement's purposes "
                        f"(declared: {', '.join(sorted(declared)) or 'none'})",
                    )
                )
        findings.extend(_recipients(grant, at, parties, kinds))
        findings.extend(_resource_rules(grant, at, kinds))
    return findings


def _items(container: Any, key: str) -> Iterator[tuple[int, Any]]:
    value = container.get(key) if isinstance(container, Mapping) else None
    return enumerate(value) if isinstance(value, list) else iter(())


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _dates(doc: Mapping[str, Any]) -> Iterator[Finding]:
    start, end = _as_date(doc.get("valid_from")), _as_date(doc.get("valid_until"))
    review = _as_date(doc.get("review_by"))
    if start and end and end < start:
        yield ("valid_until",), f"valid_until {end} is before valid_from {start}"
    elif start and end and review and not start <= review <= end:
        yield ("review_by",), f"review_by {review} is outside the validity {start} to {end}"


def _parties(
    doc: Mapping[str, Any], kinds: Mapping[str, str | None], findings: list[Finding]
) -> Iterator[tuple[str, str | None]]:
    seen: set[str] = set()
    for i, party in _items(doc, "parties"):
        agency = party.get("agency") if isinstance(party, Mapping) else None
        if not isinstance(agency, str) or not agency:
            continue
        if agency not in kinds:
            findings.append((("parties", i, "agency"), _unknown_agency(agency, kinds)))
        elif agency in seen:
            findings.append((("parties", i, "agency"), f"{agency} is listed as a party twice"))
        seen.add(agency)
        yield agency, kinds.get(agency)


def _declared_purposes(doc: Mapping[str, Any], findings: list[Finding]) -> set[str]:
    declared: set[str] = set()
    for i, purpose in _items(doc, "purposes"):
        code = purpose.get("code") if isinstance(purpose, Mapping) else None
        if isinstance(code, str):
            if code in declared:
                findings.append((("purposes", i, "code"), f"purpose {code!r} declared twice"))
            declared.add(code)
    return declared


def _unknown_agency(code: str, kinds: Mapping[str, str | None]) -> str:
    return f"unknown agency code {code!r} (known: {', '.join(sorted(kinds))})"


def _recipients(
    grant: Mapping[str, Any],
    at: FieldPath,
    parties: Mapping[str, str | None],
    kinds: Mapping[str, str | None],
) -> Iterator[Finding]:
    party_kinds = set(parties.values())
    for j, recipient in _items(grant, "recipients"):
        if not isinstance(recipient, str) or not recipient:
            continue
        where = (*at, "recipients", j)
        if recipient.startswith("kind:"):
            kind = recipient.removeprefix("kind:")
            if kind not in AGENCY_KINDS:
                known = ", ".join(sorted(AGENCY_KINDS))
                yield where, f"unknown agency kind {kind!r} (kinds: {known})"
            elif None not in party_kinds and kind not in party_kinds:
                yield where, f"no party to this agreement is of kind {kind!r}"
        elif recipient not in kinds:
            yield where, _unknown_agency(recipient, kinds)
        elif recipient not in parties:
            yield where, f"recipient {recipient} is not a party to this agreement"


def _resource_rules(
    grant: Mapping[str, Any], at: FieldPath, kinds: Mapping[str, str | None]
) -> Iterator[Finding]:
    resource = grant.get("resource")
    if not isinstance(resource, str) or resource not in RESOURCE_ACTIONS:
        return  # the schema reports an unknown or missing resource (or a list: unhashable)
    supported = RESOURCE_ACTIONS[resource]
    for j, action in _items(grant, "actions"):
        if action in ACTIONS and action not in supported:
            yield (
                (*at, "actions", j),
                f"action {action!r} is not supported on {resource} "
                f"(supported: {', '.join(sorted(supported))})",
            )
        if action == "search" and grant.get("level") in (PSEUDONYMISED, AGGREGATE):
            # The searcher already holds an identifier: whatever answers it is tied to it.
            yield (*at, "actions", j), "search may be granted at level identified only"
    granted: set[str] = set()
    for j, name in _items(grant, "fields"):
        if not isinstance(name, str):
            continue
        expanded = expand_field(resource, name)
        if expanded is None:
            kind = "field group" if name.startswith("group:") else "field"
            yield (*at, "fields", j), f"{resource} has no {kind} {name.removeprefix('group:')!r}"
            continue
        granted.update(expanded)
        restricted = sorted(set(expanded) & RESTRICTED.get(resource, frozenset()))
        for recipient in _voluntary_or_unknown(grant, kinds) if restricted else ():
            yield (*at, "fields", j), _restricted_message(restricted, recipient, kinds)
    yield from _level_rules(grant, at, resource, granted)
    conditions = grant.get("conditions")
    if isinstance(conditions, Mapping):
        low, high = conditions.get("min_age"), conditions.get("max_age")
        if type(low) is int and type(high) is int and low > high:
            yield (*at, "conditions", "max_age"), f"max_age {high} is below min_age {low}"


def _voluntary_or_unknown(grant: Mapping[str, Any], kinds: Mapping[str, str | None]) -> list[str]:
    """Recipients that are, or cannot be shown not to be, voluntary-sector agencies."""
    return [
        recipient
        for _, recipient in _items(grant, "recipients")
        if recipient == "kind:voluntary"
        or (isinstance(recipient, str) and kinds.get(recipient, "") in (None, "voluntary"))
    ]


def _restricted_message(fields: list[str], recipient: str, kinds: Mapping[str, str | None]) -> str:
    what = f"restricted victim field{'s' if len(fields) > 1 else ''} {', '.join(fields)}"
    if recipient != "kind:voluntary" and kinds.get(recipient) is None:
        return f"{what} cannot be granted to {recipient}: its agency kind is unknown"
    return f"{what} may not be granted to voluntary-sector recipient {recipient}"


def _level_rules(
    grant: Mapping[str, Any], at: FieldPath, resource: str, granted: set[str]
) -> Iterator[Finding]:
    level = grant.get("level")
    if resource in AGGREGATE_RESOURCES and isinstance(level, str) and level != AGGREGATE:
        yield (*at, "level"), f"{resource} holds aggregates only: level must be aggregate"
    if grant.get("age_band") is True:
        if level != PSEUDONYMISED:
            yield (*at, "age_band"), "age_band applies only at level pseudonymised"
        elif "date_of_birth" not in granted:
            yield (*at, "age_band"), "age_band needs date_of_birth among the fields"
