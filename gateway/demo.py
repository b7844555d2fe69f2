"""Synthetic demo data: a West Midlands IOM partnership as the 2015 report to the Strategic
Policing and Crime Board describes it, populated with made-up people.

`load_demo` registers the partner agencies and one API client each (through the registry
service, so the registrations are audited like any other), the seven local authority areas with
their policing units, and a cohort of synthetic subjects with identifiers, cohort memberships,
risk assessments, needs, case management and, for domestic-abuse perpetrators, victim links.

Nothing here is real. Names and street names come from Faker's en_GB provider; postcodes are
well-formed and in the right districts but the inward codes are random; phone numbers are in
Ofcom's range reserved for drama (07700 900000-900999), so none can ring anybody; PNC ids
carry a correct check letter but are random; the voluntary providers' names are invented.

Determinism: for a given seed and `today`, every subject, identifier, name, date and relation
is the same on every run (a seeded `random.Random` and a seeded Faker; internal subject ids
are drawn from the same generator). Only the API client secrets, minted by the registry, the
registrations' audit events and the gateway's own bookkeeping timestamps (`created_at`,
`updated_at`) differ between runs.

Time: ages are ages on `today` (default: the real date), because the gateway decides age
conditions such as "youth caseload, max_age 17" on the real date. Cohort memberships start in
the report's period, 2014-2016, except where the person was too young then (a 15-year-old's
youth cohort membership starts when they were old enough to offend, not in 2015).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import sqlalchemy as sa
from faker import Faker
from sqlalchemy.orm import Session

from gateway.models import (
    Agency,
    Area,
    CohortMembership,
    Management,
    Need,
    Offence,
    PolicingUnit,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
    VictimLink,
)
from gateway.services.caseload import reoffending_band
from gateway.services.registry import IssuedClient, RegistryError, add_agency, add_client
from policies.identifiers import normalise_identifier, pnc_check_character
from policies.vocabulary import PATHWAYS

__all__ = [
    "AREA_DISTRICTS",
    "DEMO_AGENCIES",
    "DEMO_AREAS",
    "DemoAlreadyLoaded",
    "IssuedClient",
    "format_credentials",
    "load_demo",
    "read_credentials",
    "write_credentials",
]


class DemoAlreadyLoaded(RegistryError):
    """The database already holds the demo agencies; loading twice would duplicate people."""


# --- the world ----------------------------------------------------------------------------


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


# --- loading ------------------------------------------------------------------------------


def load_demo(
    session: Session, *, seed: int = 2015, subjects: int = 2000, today: date | None = None
) -> list[IssuedClient]:
    """Register the demo partnership and `subjects` synthetic people; the caller commits.

    Returns the issued API clients (with their secrets, shown only this once). Raises
    `DemoAlreadyLoaded` when agency WMP is already registered.
    """
    if subjects < 0:
        raise ValueError("subjects must not be negative")
    if session.scalar(sa.select(Agency.id).where(Agency.code == "WMP")) is not None:
        raise DemoAlreadyLoaded("demo data already loaded (agency WMP exists)")
    _ensure_areas(session)
    issued: list[IssuedClient] = []
    for spec in DEMO_AGENCIES:
        add_agency(session, spec.code, spec.name, spec.kind, list(spec.areas))
        issued.append(
            add_client(
                session,
                spec.code,
                f"{spec.name} demo client",
                list(SCOPES_BY_KIND[spec.kind]),
                client_id=f"{spec.code.lower()}-demo",
            )
        )
    session.flush()
    agency_ids = dict(
        session.execute(
            sa.select(Agency.code, Agency.id).where(
                Agency.code.in_([spec.code for spec in DEMO_AGENCIES])
            )
        ).all()
    )
    generator = _Generator(seed, today or date.today(), agency_ids)
    session.add_all(generator.people(subjects))
    session.flush()
    session.add_all(generator.offence_rows)
    session.flush()
    return issued


def _ensure_areas(session: Session) -> None:
    """Add the areas and policing units a migration or an earlier load did not add."""
    areas = set(session.scalars(sa.select(Area.code)))
    units = set(session.scalars(sa.select(PolicingUnit.code)))
    for spec in DEMO_AREAS:
        if spec.code not in areas:
            session.add(Area(code=spec.code, name=spec.name))
    session.flush()
    for spec in DEMO_AREAS:
        for unit in spec.units:
            if unit.code not in units:
                session.add(PolicingUnit(code=unit.code, name=unit.name, area_code=spec.code))
    session.flush()


@dataclass
class _Person:
    """What later choices about one subject depend on."""

    id: str
    area: str
    female: bool
    born: date
    age: int


class _Generator:
    """Draws the whole synthetic population from one seeded generator, in a fixed order."""

    def __init__(self, seed: int, today: date, agency_ids: dict[str, int]) -> None:
        # Reproducible synthetic data, not secrets: a seeded PRNG is the point.
        self.rng = random.Random(seed)  # noqa: S311
        self.offence_rng = random.Random(seed + 1)  # noqa: S311
        self.offence_rows: list[Offence] = []  # inserted after the subjects they refer to
        self.fake = Faker("en_GB")
        self.fake.seed_instance(seed)
        self.today = today
        self.agency_ids = agency_ids
        self.rows: list[object] = []
        self.used: dict[str, set[str]] = {"PNC": set(), "CRN": set(), "NOMIS": set()}
        self.case_seq = {code: self.rng.randrange(1000, 9000) for code in agency_ids}
        self.managers = self._offender_managers()

    # -- helpers --

    def _date_between(self, low: date, high: date) -> date:
        if high <= low:
            return low
        return low + timedelta(days=self.rng.randrange((high - low).days + 1))

    def _moment(self, day: date) -> datetime:
        return datetime.combine(
            day, time(self.rng.randrange(8, 18), self.rng.randrange(60)), tzinfo=UTC
        )

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _pick(self, weights: dict[str, float]) -> str:
        names = list(weights)
        return self.rng.choices(names, weights=[weights[n] for n in names])[0]

    def _sample(self, weights: dict[str, float], k: int) -> list[str]:
        """k distinct names drawn by weight, without replacement."""
        remaining = dict(weights)
        chosen: list[str] = []
        while remaining and len(chosen) < k:
            name = self._pick(remaining)
            chosen.append(name)
            del remaining[name]
        return chosen

    def _offender_managers(self) -> dict[tuple[str, str], list[str]]:
        """Each agency's offender managers per area, as opaque staff references."""
        numbers = self.rng.sample(range(10_000, 100_000), 400)
        pools: dict[tuple[str, str], list[str]] = {}
        for spec in DEMO_AGENCIES:
            if spec.kind not in ("police", "nps", "crc", "yot"):
                continue
            for area in DEMO_AREAS:
                if area.code in spec.areas:
                    size = max(2, round(area.population / 90))
                    pools[spec.code, area.code] = [f"OM-{numbers.pop()}" for _ in range(size)]
        return pools

    def _case_id(self, agency: str, area: str, start: date) -> str:
        self.case_seq[agency] += self.rng.randint(1, 9)
        number = self.case_seq[agency]
        if agency.startswith("YOT-"):
            return f"YOS/{start.year}/{number:05d}"
        prefix = {"WMP": "IOM", "NPS": "NPS", "CRC": "CRC"}[agency]
        return f"{prefix}-{area}-{number:06d}"

    def _unique(self, scheme: str, draw: Callable[[], str]) -> str:
        while True:
            value = normalise_identifier(scheme, draw())
            if value not in self.used[scheme]:
                self.used[scheme].add(value)
                return value

    def _pnc(self, person: _Person) -> str:
        first = person.born.year + self.rng.randint(10, max(10, min(person.age, 30)))
        year2 = min(first, self.today.year) % 100

        def draw() -> str:
            serial = self.rng.randint(1, 999_999)
            return f"{year2:02d}/{serial:07d}{pnc_check_character(year2, serial)}"

        return self._unique("PNC", draw)

    def _crn(self) -> str:
        def draw() -> str:
            return f"{self.rng.choice('DEX')}{self.rng.randrange(10**6):06d}"

        return self._unique("CRN", draw)

    def _nomis(self) -> str:
        def draw() -> str:
            letters = "".join(self.rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=2))
            return f"{self.rng.choice('AAAG')}{self.rng.randrange(10**4):04d}{letters}"

        return self._unique("NOMIS", draw)

    def _start(self, person: _Person) -> date:
        """A cohort start in the report's period, or as soon as the person was old enough."""
        earliest = _years_after(person.born, _MIN_COHORT_AGE)
        latest = self.today - timedelta(days=14)
        low, high = max(COHORT_PERIOD[0], earliest), min(COHORT_PERIOD[1], latest)
        if low > high:
            low, high = min(earliest, latest), latest
        return self._date_between(low, high)

    # -- people --

    def people(self, count: int) -> list[object]:
        areas = [a.code for a in DEMO_AREAS]
        weights = [a.population for a in DEMO_AREAS]
        for _ in range(count):
            self._person(self.rng.choices(areas, weights=weights)[0])
        return self.rows

    def _person(self, area: str) -> None:
        rng, fake = self.rng, self.fake
        youth = rng.random() < 0.11
        female = rng.random() < (0.2 if youth else 0.15)
        if youth:
            age = rng.randint(14, 17)
        else:
            age = rng.choices(
                [
                    rng.randint(18, 24),
                    rng.randint(25, 34),
                    rng.randint(35, 44),
                    rng.randint(45, 54),
                    rng.randint(55, 65),
                ],
                weights=[26, 35, 22, 12, 5],
            )[0]
        born = self._date_between(
            _years_before(self.today, age + 1) + timedelta(days=1),
            _years_before(self.today, age),
        )
        person = _Person(self._uuid(), area, female, born, age)
        district = rng.choice(sorted(AREA_DISTRICTS[area], key=_district_order))
        inward = f"{rng.randrange(10)}{''.join(rng.choices(POSTCODE_INWARD_LETTERS, k=2))}"
        street = f"{fake.last_name()} {rng.choice(_STREET_TYPES)}"
        address = f"{rng.randint(1, 180)} {street}"
        if rng.random() < 0.15:
            address = f"Flat {rng.randint(1, 24)}, {address}"
        group = "diverse" if area in _DIVERSE_AREAS else "other"
        self.rows.append(
            Subject(
                id=person.id,
                given_name=fake.first_name_female() if female else fake.first_name_male(),
                family_name=fake.last_name(),
                date_of_birth=born,
                gender="female" if female else "male",
                ethnicity=rng.choices(ETHNICITY_CODES, weights=_ETHNICITY_WEIGHTS[group])[0],
                address_line=address,
                postcode=f"{district} {inward}",
                phone=f"07700 900{rng.randrange(1000):03d}" if rng.random() < 0.85 else None,
                area_code=area,
                policing_unit_code=_UNIT_OF_DISTRICT[district],
            )
        )
        cohorts = self._cohorts(person)
        self._identifiers_and_management(person, cohorts)
        if any(c.cohort == "DA" for c in cohorts):
            self._victims(person)
        self._offences(person)

    def _cohorts(self, person: _Person) -> list[CohortMembership]:
        rng = self.rng
        gangs = 12.0 if person.area == "BIR" else 1.0
        if person.age < 18:
            primary = "YOUTH"
            others = {"PPO": 15, "SAC": 25, "GANG": gangs * 2, "CSE": 4, "DA": 4}
        elif person.female:
            primary = "FEMALE"
            others = {"SAC": 30, "PPO": 15, "HCCU": 15, "DA": 10, "U12M": 25}
        else:
            primary = self._pick(
                {"PPO": 18, "HCCU": 14, "SAC": 22, "DA": 20, "U12M": 14, "GANG": gangs, "CSE": 3}
            )
            others = {
                "PPO": 18,
                "HCCU": 14,
                "SAC": 22,
                "DA": 14,
                "U12M": 14,
                "GANG": gangs,
                "CSE": 2,
            }
        names = [primary]
        if rng.random() < 0.4:
            others.pop(primary, None)
            names.append(self._pick(others))
        memberships = []
        for index, name in enumerate(names):
            start = self._start(person)
            end = None
            if index > 0 and rng.random() < 0.35:  # the first membership stays current
                low = start + timedelta(days=90)
                high = self.today - timedelta(days=1)
                if low <= high:
                    end = self._date_between(low, high)
            memberships.append(
                CohortMembership(
                    subject_id=person.id,
                    cohort=name,
                    area_code=person.area,
                    start_date=start,
                    end_date=end,
                )
            )
        if 18 <= person.age <= 20 and rng.random() < 0.4:
            # Transition to adult services: a youth cohort membership ended at 18.
            memberships.append(
                CohortMembership(
                    subject_id=person.id,
                    cohort="YOUTH",
                    area_code=person.area,
                    start_date=_years_after(person.born, rng.randint(14, 16)),
                    end_date=_years_after(person.born, 18) - timedelta(days=1),
                )
            )
        self.rows.extend(memberships)
        return memberships

    def _identifiers_and_management(self, person: _Person, cohorts: list[CohortMembership]) -> None:
        rng = self.rng
        names = {c.cohort for c in cohorts if c.end_date is None}
        primary = cohorts[0].cohort
        violent = bool(names & _VIOLENT_COHORTS)
        score = max(0, min(100, round(rng.gauss(_SCORE_MEAN[primary], 16))))
        harm = SERIOUS_HARM_LEVELS[
            rng.choices(range(4), weights=(15, 45, 32, 8) if violent else (45, 42, 11, 2))[0]
        ]
        first_start = min(c.start_date for c in cohorts)
        if person.age < 18:
            agency = YOT_OF_AREA.get(person.area, "WMP")
            statutory = agency != "WMP"
        elif "U12M" in names:
            statutory, agency = True, ""
        else:
            statutory, agency = rng.random() >= _PRE_CJ_SHARE, "WMP"
        if person.age >= 18 and statutory:
            agency = "NPS" if harm in ("high", "very_high") else "CRC"

        identifiers = [("PNC", self._pnc(person))]
        if agency in ("NPS", "CRC"):
            identifiers.append(("CRN", self._crn()))
        custody = "U12M" in names or rng.random() < (
            0.05 if person.age < 18 else 0.25 if statutory else 0.1
        )
        if custody:
            identifiers.append(("NOMIS", self._nomis()))
        self.rows.extend(
            SubjectIdentifier(subject_id=person.id, scheme=scheme, value=value)
            for scheme, value in identifiers
        )

        latest = self.today - timedelta(days=7)
        case_start = self._date_between(
            max(first_start, self.today - timedelta(days=3 * 365)), latest
        )
        self.rows.append(self._case(person, agency, statutory, case_start, None))
        if (
            18 <= person.age <= 20
            and person.area in YOT_OF_AREA
            and any(c.cohort == "YOUTH" and c.end_date is not None for c in cohorts)
        ):
            youth = next(c for c in cohorts if c.cohort == "YOUTH")
            self.rows.append(
                self._case(person, YOT_OF_AREA[person.area], True, youth.start_date, youth.end_date)
            )

        # The police matrix score first; the statutory agency's serious-harm assessment later
        # records the score current at the time beside it, so the latest row has both.
        scored_on = self._date_between(max(case_start, self.today - timedelta(days=365)), latest)
        self.rows.append(
            RiskAssessment(
                subject_id=person.id,
                reoffending_score=score,
                reoffending_band=reoffending_band(score),
                serious_harm_level=None,
                assessed_by_agency_id=self.agency_ids["WMP"],
                assessed_at=self._moment(scored_on),
            )
        )
        if statutory:
            harm_on = self._date_between(scored_on + timedelta(days=1), self.today)
            self.rows.append(
                RiskAssessment(
                    subject_id=person.id,
                    reoffending_score=score,
                    reoffending_band=reoffending_band(score),
                    serious_harm_level=harm,
                    assessed_by_agency_id=self.agency_ids[agency],
                    assessed_at=self._moment(harm_on),
                )
            )

        weights = {p: 1.0 for p in PATHWAYS}
        for name in names:
            for pathway, extra in _COHORT_NEEDS[name].items():
                weights[pathway] += extra
        count = rng.choices((2, 3, 4, 5), weights=(30, 35, 22, 13))[0]
        for pathway in self._sample(weights, count):
            level = rng.choices(
                ("low", "medium", "high"),
                weights=(15, 40, 45) if weights[pathway] >= 4 else (35, 45, 20),
            )[0]
            self.rows.append(
                Need(
                    subject_id=person.id,
                    pathway=pathway,
                    level=level,
                    assessed_at=self._moment(self._date_between(scored_on, self.today)),
                )
            )

    def _case(
        self, person: _Person, agency: str, statutory: bool, start: date, end: date | None
    ) -> Management:
        return Management(
            subject_id=person.id,
            agency_id=self.agency_ids[agency],
            local_case_id=self._case_id(agency, person.area, start),
            statutory=statutory,
            offender_manager_ref=self.rng.choice(self.managers[agency, person.area]),
            start_date=start,
            end_date=end,
        )

    def _offences(self, person: _Person) -> None:
        """Further offences around the person's first case start, so the performance figures
        have something to count: most had offended in the year before; fewer do after.

        Drawn from a separate random stream so adding them changed no other demo data."""
        rng = self.offence_rng
        cases = []
        for row in reversed(self.rows):  # this person's rows are the most recent ones
            if isinstance(row, Subject):
                break
            if isinstance(row, Management):
                cases.append(row)
        if not cases:
            return
        first = min(cases, key=lambda case: case.start_date)
        windows = (
            (0.75, first.start_date - timedelta(days=365), first.start_date),
            (0.35, first.start_date + timedelta(days=1), first.start_date + timedelta(days=365)),
        )
        for share, low, high in windows:
            high = min(high, self.today)
            if high < low or rng.random() >= share:
                continue
            for number in range(rng.choices((1, 2, 3, 4), weights=(50, 25, 15, 10))[0]):
                day = low + timedelta(days=rng.randrange((high - low).days + 1))
                self.offence_rows.append(
                    Offence(
                        subject_id=person.id,
                        offence_type=rng.choices(_OFFENCE_TYPES, weights=_OFFENCE_WEIGHTS)[0],
                        offence_date=day,
                        source="caseload",
                        source_ref=f"demo:{person.id}:{day.isoformat()}:{number}",
                        reported_by_agency_id=first.agency_id,
                    )
                )

    def _victims(self, person: _Person) -> None:
        if person.age < 18:
            weights = {"parent": 50, "sibling": 30, "partner": 15, "ex-partner": 5}
        else:
            weights = {"partner": 45, "ex-partner": 35, "child": 12, "parent": 5, "sibling": 3}
        for _ in range(self.rng.choice((1, 1, 1, 2))):
            self.rows.append(
                VictimLink(
                    subject_id=person.id,
                    victim_ref=self._uuid(),
                    relationship_to_subject=self._pick(weights),
                )
            )


_STREET_TYPES = (
    "Road",
    "Road",
    "Road",
    "Street",
    "Street",
    "Avenue",
    "Close",
    "Lane",
    "Grove",
    "Drive",
    "Crescent",
    "Way",
    "Gardens",
    "Croft",
    "Place",
    "Walk",
)


def _district_order(district: str) -> tuple[str, int]:
    letters = district.rstrip("0123456789")
    return letters, int(district[len(letters) :])


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _years_after(day: date, years: int) -> date:
    return _years_before(day, -years)


# --- credentials --------------------------------------------------------------------------


def write_credentials(path: str | os.PathLike[str], clients: Iterable[IssuedClient]) -> Path:
    """Write the clients' credentials as JSON readable by the owner only (mode 0600).

    The file is written beside its destination and renamed into place, so it is never
    readable by others, not even for a moment, and a reader never sees half a file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = [
        {
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "agency": c.agency,
            "scopes": list(c.scopes),
        }
        for c in clients
    ]
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def read_credentials(path: str | os.PathLike[str]) -> list[IssuedClient]:
    """The clients a `write_credentials` file holds."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        IssuedClient(e["client_id"], e["client_secret"], e["agency"], tuple(e["scopes"]))
        for e in entries
    ]


def format_credentials(clients: Sequence[IssuedClient]) -> str:
    """A small aligned table of the clients for the terminal."""
    header = ("AGENCY", "CLIENT ID", "CLIENT SECRET", "SCOPES")
    rows = [header] + [
        (c.agency, c.client_id, c.client_secret or "(private_key_jwt)", " ".join(c.scopes))
        for c in clients
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
