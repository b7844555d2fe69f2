"""The fixed domain vocabulary that agreements, the engine and disclosure all speak.

Everything an agreement file may name is enumerated here so that a typo in an agreement is a
load error rather than a grant that silently never matches. The field attributes (identifying,
free text, restricted) live beside the field catalogue because disclosure and the loader must
agree on them exactly: a field added here without its attributes would be released in full.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

AGENCY_KINDS: Final = frozenset(
    {"police", "nps", "crc", "yot", "local_authority", "health", "voluntary", "ig_audit"}
)

# Registered by the gateway; the loader takes the known agencies as a parameter instead of
# reading this, so that a deployment with other partners needs no code change.
DEMO_AGENCIES: Final = MappingProxyType(
    {
        "WMP": "police",
        "NPS": "nps",
        "CRC": "crc",
        "YOT-BIR": "yot",
        "YOT-COV": "yot",
        "LA-BIR": "local_authority",
        "VSP-MENTOR": "voluntary",  # peer mentoring
        "VSP-DVPP": "voluntary",  # domestic-violence perpetrator programme
        "VSP-HOUSING": "voluntary",  # accommodation
        "IG-AUDIT": "ig_audit",
    }
)

AREAS: Final = MappingProxyType(
    {
        "BIR": "Birmingham",
        "COV": "Coventry",
        "DUD": "Dudley",
        "SAN": "Sandwell",
        "SOL": "Solihull",
        "WAL": "Walsall",
        "WOL": "Wolverhampton",
    }
)

COHORTS: Final = MappingProxyType(
    {
        "PPO": "Prolific and Priority Offenders",
        "HCCU": "High Crime Causing Users",
        "SAC": "Serious acquisitive crime and drugs",
        "DA": "Domestic-abuse perpetrators",
        "CSE": "Child sexual exploitation",
        "GANG": "Gangs",
        "FEMALE": "Female offenders",
        "YOUTH": "Youth",
        "U12M": "Under-12-month resettlement",
    }
)

PATHWAYS: Final = (
    "accommodation",
    "ete",
    "health",
    "drugs_alcohol",
    "finance",
    "children_families",
    "attitudes",
)

SERIOUS_HARM_LEVELS: Final = ("low", "medium", "high", "very_high")

# Most revealing first: the index is the ordering the combination rule uses.
LEVELS: Final = ("identified", "pseudonymised", "aggregate")
IDENTIFIED, PSEUDONYMISED, AGGREGATE = LEVELS

PARTY_ROLES: Final = ("controller", "recipient", "joint_controller")

RELATIONSHIPS: Final = (
    "in_recipient_caseload",
    "active_referral_to_recipient",
    "accepted_referral_with_consent",
)

# Purpose every deployment accepts without an agreement declaring it: the IG auditor's.
BUILTIN_PURPOSES: Final = frozenset({"ig-audit"})

ACTIONS: Final = ("read", "list", "create", "update", "search")

RESOURCE_ACTIONS: Final = MappingProxyType(
    {
        "subject": frozenset({"read", "list", "search"}),
        "referral": frozenset({"read", "list", "create", "update"}),
        "outcome": frozenset({"read", "list", "create"}),
        "caseload": frozenset({"read", "list", "create", "update"}),
        "metrics": frozenset({"read", "list"}),
    }
)
RESOURCES: Final = tuple(RESOURCE_ACTIONS)

# Resources whose rows are already aggregates rather than records about one person.
AGGREGATE_RESOURCES: Final = frozenset({"metrics"})

FIELDS: Final = MappingProxyType(
    {
        "subject": (
            "ref",
            "given_name",
            "family_name",
            "date_of_birth",
            "gender",
            "ethnicity",
            "address_line",
            "postcode",
            "phone",
            "identifiers",
            "area",
            "policing_unit",
            "cohorts",
            "risk",
            "needs",
            "management",
            "linked_victims",
            "updated_at",
        ),
        "referral": (
            "ref",
            "subject_ref",
            "from_agency",
            "to_agency",
            "service",
            "pathways",
            "reasons",
            "summary",
            "urgency",
            "risk_shared",
            "consent",
            "status",
            "history",
            "overdue",
            "created_at",
            "updated_at",
        ),
        "outcome": (
            "ref",
            "referral_ref",
            "type",
            "occurred_on",
            "detail",
            "recorded_by",
            "recorded_at",
        ),
        "caseload": (
            "local_case_id",
            "subject_ref",
            "status",
            "statutory",
            "offender_manager_ref",
            "risk",
            "needs",
            "cohorts",
            "updated_at",
        ),
        "metrics": ("cohort_size", "reoffenders", "offences", "rate", "frequency", "cost"),
    }
)

GROUPS: Final = MappingProxyType(
    {
        "subject": MappingProxyType(
            {
                "identity": (
                    "given_name",
                    "family_name",
                    "date_of_birth",
                    "gender",
                    "identifiers",
                ),
                "contact": ("address_line", "postcode", "phone"),
                "special_category": ("ethnicity",),
                "location": ("area", "policing_unit"),
                "risk": ("risk",),
                "needs": ("needs",),
                "management": ("management",),
                "cohorts": ("cohorts",),
                "victim": ("linked_victims",),
            }
        ),
    }
)

# Victims' data: the loader refuses to grant these to any voluntary-sector recipient.
RESTRICTED: Final = MappingProxyType({"subject": frozenset({"linked_victims"})})

FREE_TEXT: Final = MappingProxyType(
    {"referral": frozenset({"summary"}), "outcome": frozenset({"detail"})}
)

# Values that point at a person (or, for staff references, at a named officer) directly.
IDENTIFYING: Final = MappingProxyType(
    {
        "subject": frozenset(
            {
                "given_name",
                "family_name",
                "identifiers",
                "address_line",
                "phone",
                "date_of_birth",
                "postcode",
            }
        ),
        "caseload": frozenset({"local_case_id", "offender_manager_ref"}),
        "outcome": frozenset({"recorded_by"}),
    }
)

# The field holding the subject's internal id, replaced by the pseudonym at pseudonymised level.
SUBJECT_KEY: Final = MappingProxyType(
    {"subject": "ref", "referral": "subject_ref", "caseload": "subject_ref"}
)

# Structured fields keep only these keys at pseudonymised level: an allow-list, so a key
# added to a record later is withheld until someone decides it is safe.
PSEUDONYMISED_KEYS: Final = MappingProxyType(
    {
        ("subject", "risk"): frozenset({"reoffending_band", "serious_harm_level"}),
        ("caseload", "risk"): frozenset({"reoffending_band", "serious_harm_level"}),
        ("subject", "needs"): frozenset(PATHWAYS),
        ("caseload", "needs"): frozenset(PATHWAYS),
        ("subject", "management"): frozenset({"agency", "statutory", "since"}),
        ("referral", "history"): frozenset({"status", "at", "agency"}),
        ("referral", "risk_shared"): frozenset({"reoffending_band", "serious_harm_level"}),
        ("referral", "consent"): frozenset({"status", "lawful_basis", "recorded_at"}),
    }
)

# Fields never released at pseudonymised level even when a grant names them.
PSEUDONYMISED_WITHHELD: Final = MappingProxyType(
    {
        resource: (
            (IDENTIFYING.get(resource, frozenset()) - {"date_of_birth", "postcode"})
            | FREE_TEXT.get(resource, frozenset())
            | RESTRICTED.get(resource, frozenset())
        )
        for resource in FIELDS
    }
)

AGE_BANDS: Final = ((10, 17), (18, 24), (25, 34), (35, 44), (45, 54), (55, None))


def more_revealing(a: str, b: str) -> str:
    """The more revealing of two disclosure levels (the combination rule's tie-break)."""
    return a if LEVELS.index(a) <= LEVELS.index(b) else b


def expand_field(resource: str, name: str) -> tuple[str, ...] | None:
    """Expand a grant's field entry ("name" or "group:name"); None when the resource lacks it."""
    if name.startswith("group:"):
        return GROUPS.get(resource, {}).get(name.removeprefix("group:"))
    return (name,) if name in FIELDS.get(resource, ()) else None
