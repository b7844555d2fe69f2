"""The decision engine: may this agency do this action on this resource, for this purpose?

Agreements are compiled once into dictionaries keyed by (recipient, resource, action,
purpose), where the recipient is an agency code or "kind:<kind>", so `decide` is a lookup
plus condition checks. Deny by default: no grant, no access.

Combination rule. A record is released if at least one grant permits it. A grant permits
when its agreement is in force on the day (valid_from <= today <= valid_until), it names the
action and the purpose, the caller is the named recipient (or a party of the named kind), its
level is not aggregate (unless the resource itself holds aggregates), and every condition holds
on the record: within one kind of condition the listed values are alternatives (any listed
cohort, area or relationship), across kinds all must hold. Each field is released at the most
revealing level among the permitting grants that name that field, so no field is ever released
at a level that no single permitting grant allows for it; a field no permitting grant names is
not released. A date of birth released at pseudonymised level is an age band only if every
permitting grant that supplies it that way asks for the band (the year is more revealing).
Victim fields are withheld from voluntary-sector callers even if an agreement slipped through.

For lists (record None) conditions are not evaluated: the decision says whether any grant could
apply, and `list_scope` gives those grants' conditions as data for the gateway's SQL filter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType

from policies.model import Agreement, Conditions, Grant
from policies.vocabulary import (
    AGGREGATE,
    AGGREGATE_RESOURCES,
    BUILTIN_PURPOSES,
    LEVELS,
    PSEUDONYMISED,
    RESTRICTED,
    SUBJECT_KEY,
    more_revealing,
)


@dataclass(frozen=True)
class RecordContext:
    """What the gateway knows about the record, in the terms conditions are written in."""

    cohorts: frozenset[str] = frozenset()
    area: str | None = None
    age: int | None = None
    managed_by: frozenset[str] = frozenset()
    active_referrals_to: frozenset[str] = frozenset()
    accepted_with_consent_by: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Reason:
    """Why one candidate grant did not permit; `code` is stable, `message` is for people."""

    agreement: str
    grant: str
    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    permitted: bool
    agency: str
    action: str
    resource: str
    purpose: str
    basis: tuple[tuple[str, str], ...] = ()
    fields: dict[str, str] = field(default_factory=dict, hash=False)
    level: str | None = None
    reasons: tuple[Reason, ...] = ()
    age_band: bool = False
    # The agreement whose pseudonym domain applies to the record's subject key, if pseudonymised.
    pseudonym_agreement: str | None = None


@dataclass(frozen=True)
class GrantScope:
    """One applicable grant's conditions as plain data, for building a list query."""

    agreement: str
    grant: str
    level: str
    fields: tuple[str, ...]
    cohorts: frozenset[str]
    areas: frozenset[str]
    min_age: int | None
    max_age: int | None
    relationships: frozenset[str]


@dataclass(frozen=True)
class _Entry:
    agreement: Agreement
    grant: Grant
    # For a "kind:" grant, the agencies it can reach (the agreement's parties); else None.
    kind_parties: frozenset[str] | None


Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class PolicySet:
    """The compiled, immutable form of the agreements in force; swap the whole object to reload."""

    agreements: tuple[Agreement, ...]
    purposes: frozenset[str]
    exact: Mapping[Key, tuple[_Entry, ...]] = field(repr=False)
    by_resource: Mapping[tuple[str, str], tuple[_Entry, ...]] = field(repr=False)


def compile_policy(agreements: Iterable[Agreement]) -> PolicySet:
    """Index every grant by (recipient, resource, action, purpose).

    One agreement id may appear once: a new version supersedes the old one by the gateway
    retiring the old one, not by both being compiled and the engine guessing which wins.
    """
    agreements = tuple(agreements)
    ids = [a.id for a in agreements]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"agreements given more than once: {', '.join(duplicated)}")
    exact: dict[Key, list[_Entry]] = defaultdict(list)
    by_resource: dict[tuple[str, str], list[_Entry]] = defaultdict(list)
    for agreement in agreements:
        for grant in agreement.grants:
            for recipient in grant.recipients:
                by_kind = recipient.startswith("kind:")
                entry = _Entry(agreement, grant, agreement.party_codes if by_kind else None)
                by_resource[recipient, grant.resource].append(entry)
                for action in grant.actions:
                    for purpose in grant.purposes:
                        exact[recipient, grant.resource, action, purpose].append(entry)
    purposes = BUILTIN_PURPOSES | {p.code for a in agreements for p in a.purposes}
    return PolicySet(
        agreements=agreements,
        purposes=frozenset(purposes),
        exact=MappingProxyType({k: tuple(v) for k, v in exact.items()}),
        by_resource=MappingProxyType({k: tuple(v) for k, v in by_resource.items()}),
    )


def decide(
    policy: PolicySet,
    *,
    agency: str,
    agency_kind: str,
    action: str,
    resource: str,
    purpose: str,
    record: RecordContext | None,
    now: datetime,
) -> Decision:
    """Decide one request; pure, so the same inputs always give the same Decision."""
    today = _utc_day(now)
    candidates = _entries(policy.exact, agency, agency_kind, (resource, action, purpose))
    permitting: list[_Entry] = []
    reasons: list[Reason] = []
    for entry in candidates:
        failures = _gate(entry, today, resource) or (
            _unmet(entry.grant.conditions, record, agency) if record is not None else []
        )
        if failures:
            reasons.extend(_reason(entry, code, message) for code, message in failures)
        else:
            permitting.append(entry)
    if not permitting:
        reasons.extend(
            _other_reasons(policy, agency, agency_kind, action, resource, purpose, today)
        )
        if not reasons:
            reasons.append(
                Reason("-", "-", "no_agreement", _no_agreement(agency, action, resource))
            )
    return _combine(permitting, tuple(reasons), agency, agency_kind, action, resource, purpose)


def list_scope(
    policy: PolicySet,
    *,
    agency: str,
    agency_kind: str,
    action: str,
    resource: str,
    purpose: str,
    now: datetime,
) -> list[GrantScope]:
    """The grants a list or search may draw on; the gateway ORs their conditions in SQL.

    An empty list means "return nothing" (and load nothing): never "no filter".
    """
    today = _utc_day(now)
    return [
        GrantScope(
            agreement=entry.agreement.label,
            grant=entry.grant.id,
            level=entry.grant.level,
            fields=entry.grant.fields,
            cohorts=entry.grant.conditions.cohorts,
            areas=entry.grant.conditions.areas,
            min_age=entry.grant.conditions.min_age,
            max_age=entry.grant.conditions.max_age,
            relationships=entry.grant.conditions.relationships,
        )
        for entry in _entries(policy.exact, agency, agency_kind, (resource, action, purpose))
        if not _gate(entry, today, resource)
    ]


def explain(decision: Decision) -> str:
    """A readable account of a decision for auditors, logs of the decision and error details."""
    verdict = "PERMIT" if decision.permitted else "DENY"
    lines = [
        f"{verdict}: {decision.agency} {decision.action} {decision.resource} "
        f"for purpose {decision.purpose}"
    ]
    for agreement, grant in decision.basis:
        lines.append(f"  permitted by {agreement} grant {grant}")
    if decision.fields:
        by_level: dict[str, list[str]] = defaultdict(list)
        for name, level in decision.fields.items():
            by_level[level].append(name)
        for level in (level for level in LEVELS if by_level[level]):
            lines.append(f"  {level}: {', '.join(by_level[level])}")
        if decision.age_band:
            lines.append("  date_of_birth is released as an age band")
    if decision.reasons:
        lines.append("  not permitting:" if decision.permitted else "  reasons:")
        for r in decision.reasons:
            lines.append(f"    {r.agreement} grant {r.grant}: {r.code} - {r.message}")
    return "\n".join(lines)


def _utc_day(now: datetime) -> date:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC).date()


def _entries(
    table: Mapping[tuple[str, ...], tuple[_Entry, ...]],
    agency: str,
    agency_kind: str,
    rest: tuple[str, ...],
) -> list[_Entry]:
    """Grants naming the agency or its kind; a kind grant reaches only parties to its agreement."""
    found = table.get((agency, *rest), ()) + table.get((f"kind:{agency_kind}", *rest), ())
    unique = {
        (e.agreement.label, e.grant.id): e
        for e in found
        if e.kind_parties is None or agency in e.kind_parties
    }
    return list(unique.values())


def _gate(entry: _Entry, today: date, resource: str) -> list[tuple[str, str]]:
    """Reasons independent of the record: validity dates and aggregate-only grants."""
    agreement, failures = entry.agreement, []
    if today < agreement.valid_from:
        failures.append(
            ("agreement_not_yet_valid", f"{agreement.label} is valid from {agreement.valid_from}")
        )
    elif today > agreement.valid_until:
        failures.append(
            ("agreement_expired", f"{agreement.label} expired on {agreement.valid_until}")
        )
    if entry.grant.level == AGGREGATE and resource not in AGGREGATE_RESOURCES:
        failures.append(("aggregate_only", "grant allows aggregate figures only, not records"))
    return failures


def _unmet(conditions: Conditions, record: RecordContext, agency: str) -> list[tuple[str, str]]:
    unmet = []
    if conditions.cohorts and not conditions.cohorts & record.cohorts:
        have = ", ".join(sorted(record.cohorts)) or "none"
        unmet.append(
            ("cohort_not_met", f"needs cohort {_any(conditions.cohorts)}; record has {have}")
        )
    if conditions.areas and record.area not in conditions.areas:
        unmet.append(
            ("area_not_met", f"needs area {_any(conditions.areas)}; record has {record.area}")
        )
    if conditions.min_age is not None or conditions.max_age is not None:
        low, high = conditions.min_age, conditions.max_age
        age = record.age
        if age is None or (low is not None and age < low) or (high is not None and age > high):
            wanted = f"{low if low is not None else 0} to {high if high is not None else 'any'}"
            unmet.append(("age_not_met", f"needs age {wanted}; record age is {age}"))
    if conditions.relationships:
        held = {
            "in_recipient_caseload": agency in record.managed_by,
            "active_referral_to_recipient": agency in record.active_referrals_to,
            "accepted_referral_with_consent": agency in record.accepted_with_consent_by,
        }
        if not any(held[r] for r in conditions.relationships):
            unmet.append(
                (
                    "relationship_not_met",
                    f"needs {_any(conditions.relationships)} for {agency}; none holds",
                )
            )
    return unmet


def _any(values: frozenset[str]) -> str:
    return " or ".join(sorted(values))


def _reason(entry: _Entry, code: str, message: str) -> Reason:
    return Reason(entry.agreement.label, entry.grant.id, code, message)


def _other_reasons(
    policy: PolicySet,
    agency: str,
    agency_kind: str,
    action: str,
    resource: str,
    purpose: str,
    today: date,
) -> list[Reason]:
    """On a denial, why the agency's other grants on this resource did not apply either."""
    reasons = []
    for entry in _entries(policy.by_resource, agency, agency_kind, (resource,)):
        grant = entry.grant
        if action in grant.actions and purpose in grant.purposes:
            continue  # already evaluated as a candidate
        failures = _gate(entry, today, resource)
        if action not in grant.actions:
            failures.append(("action_not_granted", f"grant allows {', '.join(grant.actions)}"))
        if purpose not in grant.purposes:
            failures.append(
                ("purpose_not_granted", f"grant is for purpose {_any(frozenset(grant.purposes))}")
            )
        reasons.extend(_reason(entry, code, message) for code, message in failures)
    return reasons


def _no_agreement(agency: str, action: str, resource: str) -> str:
    return f"no agreement in force grants {agency} any {resource} access ({action} requested)"


def _combine(
    permitting: list[_Entry],
    reasons: tuple[Reason, ...],
    agency: str,
    agency_kind: str,
    action: str,
    resource: str,
    purpose: str,
) -> Decision:
    if not permitting:
        return Decision(False, agency, action, resource, purpose, reasons=reasons)
    permitting.sort(key=lambda e: (e.agreement.label, e.grant.id))
    fields: dict[str, str] = {}
    banded: dict[str, bool] = {}
    withheld = RESTRICTED.get(resource, frozenset()) if agency_kind == "voluntary" else frozenset()
    for entry in permitting:
        for name in entry.grant.fields:
            if name in withheld:
                continue
            fields[name] = more_revealing(fields.get(name, entry.grant.level), entry.grant.level)
            if entry.grant.level == PSEUDONYMISED:
                banded[name] = banded.get(name, True) and entry.grant.age_band
    key = SUBJECT_KEY.get(resource)
    pseudonym_agreement = next(
        (
            e.agreement.id
            for e in permitting
            if e.grant.level == PSEUDONYMISED and key in e.grant.fields
        ),
        None,
    )
    return Decision(
        permitted=True,
        agency=agency,
        action=action,
        resource=resource,
        purpose=purpose,
        basis=tuple((e.agreement.label, e.grant.id) for e in permitting),
        fields=fields,
        level=min(fields.values(), key=LEVELS.index) if fields else permitting[0].grant.level,
        reasons=reasons,
        age_band=fields.get("date_of_birth") == PSEUDONYMISED
        and banded.get("date_of_birth", False),
        pseudonym_agreement=pseudonym_agreement if fields.get(key or "") == PSEUDONYMISED else None,
    )
