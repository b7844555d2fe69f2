"""The seeded draw of the synthetic people, apart from the loading because it touches no
database and its fixed order of random calls is what keeps every seed's data the same."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from faker import Faker

from gateway.demo.world import (
    _COHORT_NEEDS,
    _DIVERSE_AREAS,
    _ETHNICITY_WEIGHTS,
    _MIN_COHORT_AGE,
    _OFFENCE_TYPES,
    _OFFENCE_WEIGHTS,
    _PRE_CJ_SHARE,
    _SCORE_MEAN,
    _UNIT_OF_DISTRICT,
    _VIOLENT_COHORTS,
    AREA_DISTRICTS,
    COHORT_PERIOD,
    DEMO_AGENCIES,
    DEMO_AREAS,
    ETHNICITY_CODES,
    POSTCODE_INWARD_LETTERS,
    SERIOUS_HARM_LEVELS,
    YOT_OF_AREA,
)
from gateway.models import (
    CohortMembership,
    Management,
    Need,
    Offence,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
    VictimLink,
)
from gateway.services.caseload import reoffending_band
from policies.identifiers import normalise_identifier, pnc_check_character
from policies.vocabulary import PATHWAYS


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
