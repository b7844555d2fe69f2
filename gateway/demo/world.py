"""The partnership and its population as data: areas, units, agencies, scopes and the weights
people are drawn by, apart from the drawing so the world can be read and tuned on its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class UnitSpec:
    code: str
    name: str
    districts: tuple[str, ...]


@dataclass(frozen=True)
class AreaSpec:
    code: str
    name: str
    population: int  # 2011 census, thousands: weights where the demo's people live
    units: tuple[UnitSpec, ...]

    @property
    def districts(self) -> tuple[str, ...]:
        return tuple(d for unit in self.units for d in unit.districts)


def _districts(prefix: str, *numbers: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in numbers)


# Postcode districts per area (Birmingham B1-B48, Coventry CV1-CV7, Dudley DY1-DY9, Sandwell
# B64-B71, Solihull B90-B94, Walsall WS1-WS9, Wolverhampton WV1-WV14), split between each
# area's policing units roughly along their real geography.
DEMO_AREAS: tuple[AreaSpec, ...] = (
    AreaSpec(
        "BIR",
        "Birmingham",
        1073,
        (
            UnitSpec(
                "BIR-N",
                "Birmingham North",
                _districts("B", 1, 2, 3, 4, 6, 7, 19, 20, 21, 22, 23, 24, 35, 42, 43, 44),
            ),
            UnitSpec(
                "BIR-E",
                "Birmingham East",
                _districts("B", 8, 9, 10, 11, 25, 26, 33, 34, 36, 37, 39, 40, 41, 46),
            ),
            UnitSpec(
                "BIR-S",
                "Birmingham South",
                _districts(
                    "B", 5, 12, 13, 14, 15, 16, 17, 18, 27, 28, 29, 30, 31, 32, 38, 45, 47, 48
                ),
            ),
        ),
    ),
    AreaSpec(
        "COV",
        "Coventry",
        317,
        (
            UnitSpec("COV-N", "Coventry North", _districts("CV", 1, 2, 6, 7)),
            UnitSpec("COV-S", "Coventry South", _districts("CV", 3, 4, 5)),
        ),
    ),
    AreaSpec(
        "DUD",
        "Dudley",
        313,
        (
            UnitSpec("DUD-N", "Dudley North", _districts("DY", 1, 2, 3, 4)),
            UnitSpec("DUD-S", "Dudley South", _districts("DY", 5, 6, 7, 8, 9)),
        ),
    ),
    AreaSpec(
        "SAN",
        "Sandwell",
        309,
        (
            UnitSpec("SAN-E", "Sandwell East", _districts("B", 66, 67, 70, 71)),
            UnitSpec("SAN-W", "Sandwell West", _districts("B", 64, 65, 68, 69)),
        ),
    ),
    AreaSpec(
        "SOL",
        "Solihull",
        207,
        (
            UnitSpec("SOL-N", "Solihull North", _districts("B", 91, 92)),
            UnitSpec("SOL-S", "Solihull South", _districts("B", 90, 93, 94)),
        ),
    ),
    AreaSpec(
        "WAL",
        "Walsall",
        269,
        (
            UnitSpec("WAL-N", "Walsall North", _districts("WS", 2, 3, 4, 6, 7, 8)),
            UnitSpec("WAL-S", "Walsall South", _districts("WS", 1, 5, 9)),
        ),
    ),
    AreaSpec(
        "WOL",
        "Wolverhampton",
        250,
        (
            UnitSpec(
                "WOL-N", "Wolverhampton North", _districts("WV", 1, 6, 7, 8, 9, 10, 11, 12, 13)
            ),
            UnitSpec("WOL-S", "Wolverhampton South", _districts("WV", 2, 3, 4, 5, 14)),
        ),
    ),
)
AREA_CODES = tuple(a.code for a in DEMO_AREAS)
AREA_DISTRICTS: dict[str, frozenset[str]] = {a.code: frozenset(a.districts) for a in DEMO_AREAS}
_UNIT_OF_DISTRICT = {d: u.code for a in DEMO_AREAS for u in a.units for d in u.districts}

# Letters a postcode's inward code may end with (never C, I, K, M, O or V).
POSTCODE_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


@dataclass(frozen=True)
class AgencySpec:
    code: str
    name: str
    kind: str
    areas: tuple[str, ...]


# The voluntary providers' names are invented; any likeness to a real charity is unintended.
DEMO_AGENCIES: tuple[AgencySpec, ...] = (
    AgencySpec("WMP", "West Midlands Police", "police", AREA_CODES),
    AgencySpec("NPS", "National Probation Service \N{EN DASH} West Midlands", "nps", AREA_CODES),
    AgencySpec("CRC", "Staffordshire and West Midlands CRC", "crc", AREA_CODES),
    AgencySpec("YOT-BIR", "Birmingham Youth Offending Service", "yot", ("BIR",)),
    AgencySpec("YOT-COV", "Coventry Youth Offending Service", "yot", ("COV",)),
    AgencySpec("LA-BIR", "Birmingham City Council", "local_authority", ("BIR",)),
    AgencySpec("VSP-MENTOR", "Fernhollow Peer Mentoring Trust", "voluntary", AREA_CODES),
    AgencySpec("VSP-DVPP", "Lanternwell Change Programme", "voluntary", AREA_CODES),
    AgencySpec("VSP-HOUSING", "Quillbrook Supported Housing", "voluntary", AREA_CODES),
    AgencySpec(
        "IG-AUDIT",
        "West Midlands IOM Partnership Information Governance Audit",
        "ig_audit",
        AREA_CODES,
    ),
)

SCOPES_BY_KIND: dict[str, tuple[str, ...]] = {
    "police": (
        "subjects:read",
        "subjects:search",
        "agreements:read",
        "referrals:read",
        "referrals:write",
        "caseload:read",
        "caseload:write",
        "metrics:read",
    ),
    "nps": (
        "subjects:read",
        "subjects:search",
        "agreements:read",
        "caseload:read",
        "caseload:write",
        "referrals:read",
        "referrals:write",
        "metrics:read",
    ),
    "yot": (
        "subjects:read",
        "agreements:read",
        "caseload:read",
        "caseload:write",
        "referrals:read",
        "referrals:write",
    ),
    "local_authority": ("agreements:read", "metrics:read"),
    "voluntary": ("subjects:read", "agreements:read", "referrals:read", "referrals:write"),
    "ig_audit": ("audit:read", "agreements:read"),
}
SCOPES_BY_KIND["crc"] = SCOPES_BY_KIND["nps"]

YOT_OF_AREA = {"BIR": "YOT-BIR", "COV": "YOT-COV"}

# 2011 census ethnicity, the police "18+1" short codes: 18 categories and NS (not stated).
ETHNICITY_CODES = (
    "W1",
    "W2",
    "W3",
    "W9",
    "M1",
    "M2",
    "M3",
    "M9",
    "A1",
    "A2",
    "A3",
    "A4",
    "A9",
    "B1",
    "B2",
    "B9",
    "O1",
    "O9",
    "NS",
)
_ETHNICITY_WEIGHTS = {
    # Birmingham, Coventry, Sandwell and Wolverhampton: the more diverse areas.
    "diverse": (46, 1, 1, 4, 6, 1, 1, 1, 5, 11, 2, 0.3, 2, 7, 3, 2, 0.5, 1, 3),
    "other": (78, 1, 1, 3, 3, 0.5, 0.5, 0.5, 3, 3, 1, 0.2, 1, 2, 0.5, 0.5, 0.3, 0.5, 2),
}
_DIVERSE_AREAS = frozenset({"BIR", "COV", "SAN", "WOL"})

# Which needs come with which cohort (added to a base weight of 1 for every pathway).
_COHORT_NEEDS: dict[str, dict[str, float]] = {
    "PPO": {"drugs_alcohol": 3, "accommodation": 2, "ete": 2, "attitudes": 2},
    "HCCU": {"drugs_alcohol": 5, "health": 2, "finance": 2, "accommodation": 2},
    "SAC": {"drugs_alcohol": 4, "finance": 2, "ete": 2},
    "DA": {"attitudes": 4, "children_families": 3, "drugs_alcohol": 2},
    "CSE": {"attitudes": 4, "health": 1},
    "GANG": {"attitudes": 3, "ete": 3},
    "FEMALE": {"children_families": 4, "health": 3, "accommodation": 2, "finance": 2},
    "YOUTH": {"ete": 5, "children_families": 3, "attitudes": 2},
    "U12M": {"accommodation": 5, "finance": 3, "ete": 2, "drugs_alcohol": 2},
}
# Mean of the police risk-matrix score (acquisitive crime and drugs) per primary cohort.
_SCORE_MEAN = {
    "PPO": 66,
    "HCCU": 60,
    "SAC": 52,
    "U12M": 50,
    "GANG": 45,
    "YOUTH": 42,
    "FEMALE": 38,
    "DA": 32,
    "CSE": 25,
}
_VIOLENT_COHORTS = frozenset({"DA", "GANG", "CSE"})
SERIOUS_HARM_LEVELS = ("low", "medium", "high", "very_high")

COHORT_PERIOD = (date(2014, 1, 1), date(2016, 12, 31))  # the seed report's period
_MIN_COHORT_AGE = 12
# Non-statutory adults outside the U12M cohort: about 30% of all adults end up pre-CJ.
_PRE_CJ_SHARE = 0.35


# Acquisitive crime and drugs dominate IOM cohorts' offending (the seed's risk matrix).
_OFFENCE_TYPES = (
    "shoplifting",
    "burglary_dwelling",
    "burglary_other",
    "theft_from_vehicle",
    "theft_of_vehicle",
    "other_theft",
    "drug_offence",
    "violence_without_injury",
    "violence_with_injury",
    "criminal_damage",
    "robbery",
    "fraud",
)
_OFFENCE_WEIGHTS = (24, 10, 6, 8, 4, 12, 12, 8, 5, 6, 3, 2)
