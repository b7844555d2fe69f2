"""The demo data generator, against real SQLite databases built from the models."""

from __future__ import annotations

import json
import re
import stat
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from audit.models import AuditBase, AuditEventRow
from gateway.db import Base, make_engine
from gateway.demo import (
    AREA_DISTRICTS,
    DEMO_AREAS,
    DemoAlreadyLoaded,
    format_credentials,
    load_demo,
    read_credentials,
    write_credentials,
)
from gateway.models import (
    Agency,
    ApiClient,
    Area,
    CohortMembership,
    Management,
    Need,
    PolicingUnit,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
    VictimLink,
)
from gateway.services.registry import IssuedClient
from policies.identifiers import normalise_identifier
from policies.vocabulary import COHORTS, PATHWAYS

SUBJECTS = 200
TODAY = date(2025, 6, 30)
POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?) [0-9][ABD-HJLNP-UW-Z]{2}")
PHONE = re.compile(r"07700 900[0-9]{3}")

EXPECTED_AGENCIES = {
    "WMP": "police",
    "NPS": "nps",
    "CRC": "crc",
    "YOT-BIR": "yot",
    "YOT-COV": "yot",
    "LA-BIR": "local_authority",
    "VSP-MENTOR": "voluntary",
    "VSP-DVPP": "voluntary",
    "VSP-HOUSING": "voluntary",
    "IG-AUDIT": "ig_audit",
}
EXPECTED_SCOPES = {
    "police": "agreements:read caseload:read caseload:write metrics:read referrals:read "
    "referrals:write subjects:read subjects:search",
    "nps": "agreements:read caseload:read caseload:write metrics:read referrals:read "
    "referrals:write subjects:read subjects:search",
    "yot": "agreements:read caseload:read caseload:write referrals:read referrals:write "
    "subjects:read",
    "local_authority": "agreements:read metrics:read",
    "voluntary": "agreements:read referrals:read referrals:write subjects:read",
    "ig_audit": "agreements:read audit:read",
}
EXPECTED_SCOPES["crc"] = EXPECTED_SCOPES["nps"]


def new_session(path: Path) -> Session:
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    AuditBase.metadata.create_all(engine)
    return Session(engine)


def close(session: Session) -> None:
    engine = session.get_bind()
    session.close()
    engine.dispose()  # type: ignore[union-attr]


def load(path: Path, seed: int) -> tuple[Session, list[IssuedClient]]:
    session = new_session(path)
    issued = load_demo(session, seed=seed, subjects=SUBJECTS, today=TODAY)
    session.commit()
    return session, issued


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Session, list[IssuedClient]]]:
    session, issued = load(tmp_path_factory.mktemp("demo") / "demo.db", seed=2015)
    yield session, issued
    close(session)


@pytest.fixture(scope="module")
def db(demo: tuple[Session, list[IssuedClient]]) -> Session:
    return demo[0]


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def active(start: date, end: date | None) -> bool:
    return start <= TODAY and (end is None or end >= TODAY)


def snapshot(session: Session) -> dict[str, list[tuple]]:
    """Every generated row as plain values, without row ids or bookkeeping times."""

    def rows(*columns: sa.ColumnElement) -> list[tuple]:
        return sorted((tuple(r) for r in session.execute(sa.select(*columns))), key=repr)

    assessor = aliased(Agency)
    return {
        "subjects": rows(
            *(c for c in Subject.__table__.columns if c.name not in ("created_at", "updated_at"))
        ),
        "identifiers": rows(
            SubjectIdentifier.subject_id, SubjectIdentifier.scheme, SubjectIdentifier.value
        ),
        "cohorts": rows(
            CohortMembership.subject_id,
            CohortMembership.cohort,
            CohortMembership.area_code,
            CohortMembership.start_date,
            CohortMembership.end_date,
        ),
        "risk": sorted(
            (
                tuple(r)
                for r in session.execute(
                    sa.select(
                        RiskAssessment.subject_id,
                        RiskAssessment.reoffending_score,
                        RiskAssessment.reoffending_band,
                        RiskAssessment.serious_harm_level,
                        assessor.code,
                        RiskAssessment.assessed_at,
                    ).join(assessor, assessor.id == RiskAssessment.assessed_by_agency_id)
                )
            ),
            key=repr,
        ),
        "needs": rows(Need.subject_id, Need.pathway, Need.level, Need.assessed_at),
        "management": sorted(
            (
                tuple(r)
                for r in session.execute(
                    sa.select(
                        Management.subject_id,
                        Agency.code,
                        Management.local_case_id,
                        Management.statutory,
                        Management.offender_manager_ref,
                        Management.start_date,
                        Management.end_date,
                    ).join(Agency, Agency.id == Management.agency_id)
                )
            ),
            key=repr,
        ),
        "victims": rows(
            VictimLink.subject_id, VictimLink.victim_ref, VictimLink.relationship_to_subject
        ),
    }


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_the_same_world(tmp_path: Path, db: Session) -> None:
    again, _ = load(tmp_path / "again.db", seed=2015)
    try:
        first, second = snapshot(db), snapshot(again)
        for table, rows in first.items():
            assert rows, table
            assert rows == second[table], f"{table} differs between two loads with one seed"
    finally:
        close(again)


def test_another_seed_gives_another_world(tmp_path: Path, db: Session) -> None:
    other, _ = load(tmp_path / "other.db", seed=7)
    try:
        first, second = snapshot(db), snapshot(other)
        assert {r[0] for r in first["subjects"]}.isdisjoint(r[0] for r in second["subjects"])
        assert {r[1:3] for r in first["subjects"]} != {r[1:3] for r in second["subjects"]}
        assert {r[2] for r in first["identifiers"]} != {r[2] for r in second["identifiers"]}
    finally:
        close(other)


# --- shape ---------------------------------------------------------------------------------


def test_agencies_and_one_client_each(demo: tuple[Session, list[IssuedClient]]) -> None:
    db, issued = demo
    agencies = {a.code: a for a in db.scalars(sa.select(Agency))}
    assert {code: a.kind for code, a in agencies.items()} == EXPECTED_AGENCIES
    assert set(agencies["WMP"].areas) == set(AREA_DISTRICTS)
    assert agencies["YOT-BIR"].areas == ["BIR"]
    assert agencies["YOT-COV"].areas == ["COV"]

    clients = db.scalars(sa.select(ApiClient)).all()
    assert len(clients) == len(issued) == 10
    assert Counter(c.agency.code for c in clients) == Counter(set(EXPECTED_AGENCIES))
    by_id = {c.client_id: c for c in clients}
    for credential in issued:
        client = by_id[credential.client_id]
        assert credential.client_id == f"{credential.agency.lower()}-demo"
        assert client.agency.code == credential.agency
        assert client.scopes == EXPECTED_SCOPES[client.agency.kind]
        assert " ".join(credential.scopes) == client.scopes
        assert credential.client_secret and client.check_client_secret(credential.client_secret)

    registered = Counter(db.scalars(sa.select(AuditEventRow.kind)))
    assert registered["agency.registered"] == 10
    assert registered["client.registered"] == 10


def test_areas_and_policing_units(db: Session) -> None:
    areas = {a.code: a.name for a in db.scalars(sa.select(Area))}
    assert areas == {
        "BIR": "Birmingham",
        "COV": "Coventry",
        "DUD": "Dudley",
        "SAN": "Sandwell",
        "SOL": "Solihull",
        "WAL": "Walsall",
        "WOL": "Wolverhampton",
    }
    units: dict[str, list[PolicingUnit]] = defaultdict(list)
    for unit in db.scalars(sa.select(PolicingUnit)):
        units[unit.area_code].append(unit)
        assert unit.code.startswith(unit.area_code + "-")
        assert unit.name.startswith(areas[unit.area_code])
    assert set(units) == set(areas)
    assert all(2 <= len(u) <= 3 for u in units.values())


def test_requested_number_of_subjects_spread_by_population(db: Session) -> None:
    subjects = db.scalars(sa.select(Subject)).all()
    assert len(subjects) == SUBJECTS
    per_area = Counter(s.area_code for s in subjects)
    assert set(per_area) == set(AREA_DISTRICTS)
    assert per_area.most_common(1)[0][0] == "BIR"
    genders = Counter(s.gender for s in subjects)
    assert set(genders) == {"male", "female"}
    assert 0.05 < genders["female"] / SUBJECTS < 0.3


def test_people_look_real_and_fictional(db: Session) -> None:
    units = {u.code: u.area_code for u in db.scalars(sa.select(PolicingUnit))}
    ages = []
    for subject in db.scalars(sa.select(Subject)):
        assert subject.given_name and subject.family_name and subject.address_line
        match = POSTCODE.fullmatch(subject.postcode or "")
        assert match, subject.postcode
        assert match.group(1) in AREA_DISTRICTS[subject.area_code], subject.postcode
        assert units[subject.policing_unit_code] == subject.area_code
        assert subject.phone is None or PHONE.fullmatch(subject.phone)
        assert re.fullmatch(r"[WMABO][1-9]|NS", subject.ethnicity or "")
        ages.append(age_on(subject.date_of_birth, TODAY))
    assert min(ages) >= 14 and max(ages) <= 65
    assert any(age < 18 for age in ages) and any(age >= 18 for age in ages)


def test_every_area_lists_its_districts() -> None:
    assert AREA_DISTRICTS["BIR"] == {f"B{n}" for n in range(1, 49)}
    assert AREA_DISTRICTS["SAN"] == {f"B{n}" for n in range(64, 72)}
    assert AREA_DISTRICTS["SOL"] == {f"B{n}" for n in range(90, 95)}
    assert AREA_DISTRICTS["COV"] == {f"CV{n}" for n in range(1, 8)}
    assert AREA_DISTRICTS["DUD"] == {f"DY{n}" for n in range(1, 10)}
    assert AREA_DISTRICTS["WAL"] == {f"WS{n}" for n in range(1, 10)}
    assert AREA_DISTRICTS["WOL"] == {f"WV{n}" for n in range(1, 15)}
    for area in DEMO_AREAS:  # each district belongs to exactly one policing unit
        listed = [d for unit in area.units for d in unit.districts]
        assert len(listed) == len(set(listed)) == len(AREA_DISTRICTS[area.code])


def test_identifiers_are_valid_and_normalised(db: Session) -> None:
    identifiers: dict[str, dict[str, str]] = defaultdict(dict)
    for row in db.scalars(sa.select(SubjectIdentifier)):
        assert row.scheme not in identifiers[row.subject_id]
        identifiers[row.subject_id][row.scheme] = row.value
        assert normalise_identifier(row.scheme, row.value) == row.value
    assert len(identifiers) == SUBJECTS
    assert all("PNC" in ids for ids in identifiers.values())
    assert all(re.fullmatch(r"\d{2}/\d{7}[A-Z]", ids["PNC"]) for ids in identifiers.values())

    probation = set(
        db.scalars(
            sa.select(Management.subject_id)
            .join(Agency)
            .where(Agency.code.in_(["NPS", "CRC"]), Management.end_date.is_(None))
        )
    )
    assert {s for s, ids in identifiers.items() if "CRN" in ids} == probation
    nomis = sum("NOMIS" in ids for ids in identifiers.values()) / SUBJECTS
    assert 0.15 < nomis < 0.45


def test_cohorts(db: Session) -> None:
    subjects = {s.id: s for s in db.scalars(sa.select(Subject))}
    current: dict[str, set[str]] = defaultdict(set)
    for m in db.scalars(sa.select(CohortMembership)):
        assert m.cohort in COHORTS
        assert m.area_code == subjects[m.subject_id].area_code
        assert m.start_date <= TODAY and (m.end_date is None or m.end_date > m.start_date)
        if active(m.start_date, m.end_date):
            current[m.subject_id].add(m.cohort)
    assert set(current) == set(subjects)
    assert all(1 <= len(cohorts) <= 2 for cohorts in current.values())
    for subject_id, cohorts in current.items():
        subject = subjects[subject_id]
        young = age_on(subject.date_of_birth, TODAY) < 18
        assert ("YOUTH" in cohorts) == young
        if "FEMALE" in cohorts:
            assert subject.gender == "female"
    starts = [
        m.start_date
        for m in db.scalars(sa.select(CohortMembership))
        if age_on(subjects[m.subject_id].date_of_birth, date(2014, 1, 1)) >= 12
    ]
    assert all(date(2014, 1, 1) <= d <= date(2016, 12, 31) for d in starts)
    gangs = Counter(
        db.scalars(sa.select(CohortMembership.area_code).where(CohortMembership.cohort == "GANG"))
    )
    assert gangs["BIR"] > gangs.total() / 2  # mostly Birmingham's Multi Agency Gang Unit


def test_risk_needs_and_management(db: Session) -> None:
    subjects = {s.id: s for s in db.scalars(sa.select(Subject))}
    codes = {a.id: a.code for a in db.scalars(sa.select(Agency))}
    latest: dict[str, RiskAssessment] = {}
    for risk in db.scalars(sa.select(RiskAssessment).order_by(RiskAssessment.assessed_at)):
        latest[risk.subject_id] = risk
        assert risk.assessed_at.tzinfo is not None
        if risk.serious_harm_level is None:
            assert codes[risk.assessed_by_agency_id] == "WMP"
        else:
            assert risk.serious_harm_level in ("low", "medium", "high", "very_high")
        score = risk.reoffending_score
        assert score is not None and 0 <= score <= 100
        bands = ((25, "low"), (50, "medium"), (75, "high"), (101, "very_high"))
        band = next(name for limit, name in bands if score < limit)
        assert risk.reoffending_band == band
    assert set(latest) == set(subjects)

    needs = Counter(n.subject_id for n in db.scalars(sa.select(Need)))
    assert set(needs) == set(subjects) and all(2 <= n <= 5 for n in needs.values())
    assert {n.pathway for n in db.scalars(sa.select(Need))} <= set(PATHWAYS)

    cases = defaultdict(list)
    for m in db.scalars(sa.select(Management)):
        assert re.fullmatch(r"OM-\d+", m.offender_manager_ref or "")
        assert m.local_case_id
        if active(m.start_date, m.end_date):
            cases[m.subject_id].append(m)
    assert set(cases) == set(subjects) and all(len(c) == 1 for c in cases.values())
    pre_cj = 0
    for subject_id, (case,) in cases.items():
        subject, agency = subjects[subject_id], codes[case.agency_id]
        harm = latest[subject_id].serious_harm_level
        pre_cj += agency == "WMP"
        if age_on(subject.date_of_birth, TODAY) < 18:  # youth: their area's YOT, else police
            expected = {"BIR": "YOT-BIR", "COV": "YOT-COV"}.get(subject.area_code, "WMP")
            assert agency == expected
            assert case.statutory == (agency != "WMP")
        elif agency == "WMP":
            assert not case.statutory
        else:
            assert case.statutory
            assert agency == ("NPS" if harm in ("high", "very_high") else "CRC")
    assert 0.2 < pre_cj / SUBJECTS < 0.4  # pre-CJ, managed by the police: about 30%


def test_victim_links_only_for_domestic_abuse(db: Session) -> None:
    da = set(
        db.scalars(sa.select(CohortMembership.subject_id).where(CohortMembership.cohort == "DA"))
    )
    links = Counter(v.subject_id for v in db.scalars(sa.select(VictimLink)))
    assert links and set(links) == da
    assert all(1 <= n <= 2 for n in links.values())
    relationships = set(db.scalars(sa.select(VictimLink.relationship_to_subject)))
    assert {"partner", "ex-partner"} <= relationships


# --- guard and credentials -----------------------------------------------------------------


def test_loading_twice_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    session = new_session(tmp_path / "twice.db")
    try:
        load_demo(session, subjects=5)
        session.commit()
        with pytest.raises(DemoAlreadyLoaded, match="already loaded"):
            load_demo(session, subjects=5)
        assert session.scalar(sa.select(sa.func.count()).select_from(Subject)) == 5
        assert session.scalar(sa.select(sa.func.count()).select_from(Agency)) == 10
    finally:
        close(session)


def test_credentials_file_is_owner_only(
    tmp_path: Path, demo: tuple[Session, list[IssuedClient]]
) -> None:
    issued = demo[1]
    path = tmp_path / "instance" / "demo-credentials.json"
    path.parent.mkdir()
    path.write_text("stale")
    path.chmod(0o644)
    write_credentials(path, issued)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entries = json.loads(path.read_text())
    assert [e["client_id"] for e in entries] == [c.client_id for c in issued]
    assert set(entries[0]) == {"client_id", "client_secret", "agency", "scopes"}
    assert entries[0]["scopes"] == list(issued[0].scopes)
    assert read_credentials(path) == issued
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_credentials_table(demo: tuple[Session, list[IssuedClient]]) -> None:
    issued = demo[1]
    lines = format_credentials(issued).splitlines()
    assert len(lines) == len(issued) + 1
    assert lines[0].split()[:2] == ["AGENCY", "CLIENT"]
    secret_column = lines[0].index("CLIENT SECRET")
    for line, client in zip(lines[1:], issued, strict=True):
        assert line.startswith(client.agency)
        assert client.client_id in line
        assert line[secret_column:].startswith(client.client_secret or "")
