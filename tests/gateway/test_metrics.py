"""Performance figures: hand-computed cohorts, rates, frequencies and costs on plain objects;
then the same through the database, HTTP and the CLI, with who may see what."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from audit.models import AuditEventRow
from gateway.models import Agency, CohortMembership, Management, Offence, Subject
from gateway.services.metrics import Access, DisclosureRules, MetricsQuery, Scope
from gateway.services.metrics.disclosure import ALL, protect, release, tabulate
from gateway.services.metrics.figures import (
    BASIS,
    Membership,
    OffenceRecord,
    Period,
    Person,
    Start,
    UnitCostError,
    add_months,
    cohort_entries,
    entry_figures,
    load_unit_costs,
    parse_unit_costs,
    period_range,
)
from gateway.services.metrics.report import UnpublishedBreakdown, build_report
from schemas.referrals import OFFENCE_TYPES

PERF = "performance-reporting"
URL = "/api/v1/metrics/reoffending"
PROBLEM = "application/problem+json"
AS_OF = date(2026, 11, 30)
OFF = DisclosureRules(min_count=1, round_to=1, min_rate_base=1, cost_round_to=1)  # raw figures
REAL_COSTS = Path(__file__).resolve().parents[2] / "gateway" / "data" / "unit_costs.yaml"


def cost_table(version: int = 1, **changes: int) -> str:
    """A unit-cost file with round test figures: 100 a offence unless named."""
    base = {
        "burglary_dwelling": 1000,
        "shoplifting": 10,
        "violence_with_injury": 5000,
        "robbery": 2000,
    }
    base.update(changes)
    return yaml.safe_dump(
        {
            "version": version,
            "source": "test table",
            "price_year": "2015/16",
            "costs": {
                t: {"cost": base.get(t, 100), "basis": "illustrative"} for t in OFFENCE_TYPES
            },
        }
    )


# --- periods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("2015Q1", date(2015, 1, 1), date(2015, 3, 31)),
        ("2015Q4", date(2015, 10, 1), date(2015, 12, 31)),
        ("2016", date(2016, 1, 1), date(2016, 12, 31)),
    ],
)
def test_periods(text, first, last):
    period = Period.parse(text)
    assert (period.first_day, period.last_day, str(period)) == (first, last, text)


@pytest.mark.parametrize(
    "text", ["2015Q5", "2015Q0", "15Q1", "2015-Q1", "2015q1", "1999", "", "2015Q1 "]
)
def test_bad_periods(text):
    with pytest.raises(ValueError):
        Period.parse(text)


def test_period_ranges_and_months():
    assert [str(p) for p in period_range(Period.parse("2015Q3"), Period.parse("2016Q2"))] == [
        "2015Q3",
        "2015Q4",
        "2016Q1",
        "2016Q2",
    ]
    with pytest.raises(ValueError):
        period_range(Period.parse("2015Q3"), Period.parse("2015Q1"))
    with pytest.raises(ValueError):
        period_range(Period.parse("2015"), Period.parse("2016Q1"))
    assert add_months(date(2016, 2, 29), 12) == date(2017, 2, 28)
    assert add_months(date(2015, 1, 31), 1) == date(2015, 2, 28)
    assert add_months(date(2015, 3, 31), -13) == date(2014, 2, 28)


def test_provisional_until_follow_up_and_waiting_period_are_over():
    q1 = Period.parse("2015Q1")
    # last start 2015-03-31, follow-up to 2016-03-31, then six months' wait
    assert q1.follow_up_ends() == date(2016, 3, 31)
    assert q1.final_from(6) == date(2016, 10, 1)
    assert q1.status(date(2016, 9, 30), 6) == "provisional"
    assert q1.status(date(2016, 10, 1), 6) == "final"
    assert q1.status(date(2016, 4, 1), 0) == "final"  # the waiting period is configuration
    assert q1.status(date(2016, 3, 31), 0) == "provisional"
    assert Period.parse("2015").final_from(6) == date(2017, 7, 1)


# --- the hand-computed world --------------------------------------------------------------
#
# Year 2015, unit costs: burglary 1000, shoplifting 10, violence with injury 5000, robbery
# 2000, anything else 100.
#
#   A  case CRC 2015-01-10, PPO. Before: robbery 2014-12-01, burglary 2014-06-01 (3000).
#      After: shoplifting 2015-03-01, burglary 2015-08-01 (1010); shoplifting 2016-02-01 is
#      after the follow-up (ends 2016-01-10).
#   B  referral accepted by VSP-MENTOR 2015-02-15, PPO and DA (PPO comes first). Violence
#      on the start day: before (5000), not a further offence.
#   C  case NPS 2015-03-31, DA. Violence 2016-03-31, the follow-up's last day, reported by
#      both feeds: one offence (5000).
#   D  referral accepted by VSP-HOUSING 2015-01-20, case CRC 2015-02-01: starts 2015-01-20
#      with VSP-HOUSING; no cohort. Two shoplifting outcomes on 2015-05-05 and one caseload
#      report of the same day: two offences (20).
#   E  case CRC 2015-04-01 (Q2), PPO; other offence 2015-06-01 (100).
#   F  case CRC 2014-12-31: not in 2015.
#   G  cases CRC 2015-01-05 and 2015-05-05: counted once, in Q1. SAC (PPO ended 2014).
#      Criminal damage 2015-06-01 (100).
#   H  case CRC 2015-02-10, lives in COV with a Birmingham unit recorded: unit "unknown".
#   I  case CRC 2026-12-25, after as_of: not counted.
#
# 2015Q1: A B C D G H -> 6 people; reoffenders A C D G = 4 (66.7%); further offences
# 2+1+2+1 = 6 (1.0 per person, 1.5 per reoffender); offences before A 2 + B 1 = 3; cost
# before 3000 + 5000 = 8000, after 1010 + 5000 + 20 + 100 = 6130; difference 1870, per day
# 1870 / 365 = 5.12 -> 5.
# 2015 (the year): adds E -> 7 people, 5 reoffenders, 7 offences, cost after 6230,
# difference 1770, per day 4.85 -> 5.

PEOPLE = {s: Person(s, "BIR", "BIR-N") for s in "ABCDEFGI"}
PEOPLE["H"] = Person("H", "COV", "BIR-N")
UNITS = {"BIR-N": "BIR", "COV-N": "COV"}
STARTS = [
    Start("A", date(2015, 1, 10), "CRC", "caseload"),
    Start("B", date(2015, 2, 15), "VSP-MENTOR", "referral"),
    Start("C", date(2015, 3, 31), "NPS", "caseload"),
    Start("D", date(2015, 2, 1), "CRC", "caseload"),
    Start("D", date(2015, 1, 20), "VSP-HOUSING", "referral"),
    Start("E", date(2015, 4, 1), "CRC", "caseload"),
    Start("F", date(2014, 12, 31), "CRC", "caseload"),
    Start("G", date(2015, 5, 5), "CRC", "caseload"),
    Start("G", date(2015, 1, 5), "CRC", "caseload"),
    Start("H", date(2015, 2, 10), "CRC", "caseload"),
    Start("I", date(2026, 12, 25), "CRC", "caseload"),
]
MEMBERSHIPS = [
    Membership("A", "PPO", date(2014, 6, 1), None),
    Membership("B", "DA", date(2014, 1, 1), None),
    Membership("B", "PPO", date(2015, 1, 1), None),
    Membership("C", "DA", date(2015, 3, 1), None),
    Membership("E", "PPO", date(2015, 1, 1), None),
    Membership("G", "PPO", date(2013, 1, 1), date(2014, 12, 31)),
    Membership("G", "SAC", date(2014, 1, 1), None),
    Membership("H", "PPO", date(2015, 1, 1), None),
]


def offence(subject, kind, on, source="outcome", ref=None):
    return OffenceRecord(subject, kind, on, source, ref or uuid.uuid4().hex)


OFFENCES = [
    offence("A", "robbery", date(2014, 12, 1)),
    offence("A", "burglary_dwelling", date(2014, 6, 1)),
    offence("A", "burglary_dwelling", date(2014, 1, 10)),  # (start - 12 months) is excluded
    offence("A", "shoplifting", date(2015, 3, 1)),
    offence("A", "burglary_dwelling", date(2015, 8, 1)),
    offence("A", "shoplifting", date(2016, 2, 1)),
    offence("B", "violence_with_injury", date(2015, 2, 15)),
    offence("C", "violence_with_injury", date(2016, 3, 31), "outcome"),
    offence("C", "violence_with_injury", date(2016, 3, 31), "caseload"),
    offence("D", "shoplifting", date(2015, 5, 5), "outcome"),
    offence("D", "shoplifting", date(2015, 5, 5), "outcome"),
    offence("D", "shoplifting", date(2015, 5, 5), "caseload"),
    offence("E", "other", date(2015, 6, 1)),
    offence("G", "criminal_damage", date(2015, 6, 1)),
]


def protected_2015(costs_text: str = cost_table(), rules: DisclosureRules = OFF):
    costs = parse_unit_costs(costs_text)
    entries = cohort_entries(2015, STARTS, PEOPLE, MEMBERSHIPS, UNITS, AS_OF)
    return protect(2015, tabulate(entry_figures(entries, OFFENCES, costs, AS_OF)), rules), entries


def test_cohort_entries_follow_the_rules():
    _, entries = protected_2015()
    by_id = {e.subject_id: e for e in entries}
    assert sorted(by_id) == ["A", "B", "C", "D", "E", "G", "H"]
    assert (by_id["B"].cohort, by_id["B"].agency) == ("PPO", "VSP-MENTOR")
    assert (by_id["D"].start, by_id["D"].agency, by_id["D"].cohort) == (
        date(2015, 1, 20),
        "VSP-HOUSING",
        "none",
    )
    assert (by_id["G"].start, by_id["G"].cohort, by_id["G"].quarter) == (date(2015, 1, 5), "SAC", 1)
    assert (by_id["H"].area, by_id["H"].policing_unit) == ("COV", "unknown")
    assert by_id["E"].quarter == 2


def test_hand_computed_figures():
    protected, _ = protected_2015()
    q1 = release(protected, ("Q1", ALL, ALL, ALL, ALL), OFF)
    assert q1 == {
        "cohort_size": 6,
        "reoffenders": 4,
        "reoffending_rate": 66.7,
        "offences": 6,
        "frequency_per_person": 1.0,
        "frequency_per_reoffender": 1.5,
        "offences_before": 3,
        "cost_before": 8000,
        "cost_after": 6130,
        "cost_difference": 1870,
        "cost_difference_per_day": 5,
    }
    year = release(protected, ("Y", ALL, ALL, ALL, ALL), OFF)
    assert (year["cohort_size"], year["reoffenders"], year["offences"]) == (7, 5, 7)
    assert (year["cost_after"], year["cost_difference"], year["cost_difference_per_day"]) == (
        6230,
        1770,
        5,
    )
    ppo = release(protected, ("Q1", ALL, ALL, "PPO", ALL), OFF)  # A, B, H
    assert (ppo["cohort_size"], ppo["reoffenders"], ppo["offences"]) == (3, 1, 2)
    assert (ppo["cost_before"], ppo["cost_after"]) == (8000, 1010)
    bir_crc = release(protected, ("Q1", "BIR", ALL, ALL, "CRC"), OFF)  # A, G
    assert (bir_crc["cohort_size"], bir_crc["offences"], bir_crc["frequency_per_person"]) == (
        2,
        3,
        1.5,
    )
    unknown_unit = release(protected, ("Q1", "COV", "unknown", ALL, ALL), OFF)
    assert unknown_unit["cohort_size"] == 1 and unknown_unit["reoffending_rate"] == 0.0


def test_a_corrected_unit_cost_file_changes_the_costs_and_nothing_else():
    before, _ = protected_2015(cost_table(1))
    after, _ = protected_2015(cost_table(2, shoplifting=40))  # A: +30, D: +60 (2 offences)
    rules = DisclosureRules()
    for key in before.table:
        old, new = release(before, key, OFF), release(after, key, OFF)
        costs = {k for k in old if k.startswith("cost_")}
        assert {k: v for k, v in old.items() if k not in costs} == {
            k: v for k, v in new.items() if k not in costs
        }
        old_protected, new_protected = release(before, key, rules), release(after, key, rules)
        assert [k for k, v in old_protected.items() if v is None] == [
            k for k, v in new_protected.items() if v is None
        ]  # same suppression pattern
    q1_old = release(before, ("Q1", ALL, ALL, ALL, ALL), OFF)
    q1_new = release(after, ("Q1", ALL, ALL, ALL, ALL), OFF)
    assert q1_new["cost_after"] - q1_old["cost_after"] == 90
    assert q1_new["cost_before"] == q1_old["cost_before"]


def test_the_shipped_unit_cost_table_costs_every_offence_type():
    costs = load_unit_costs(REAL_COSTS)
    assert set(costs.costs) == set(OFFENCE_TYPES)
    assert "economic and social costs of crime" in costs.source.lower()
    assert costs.price_year == "2015/16"
    text = REAL_COSTS.read_text()
    assert "illustrative" in text and "no code change" in text
    assert {c.basis for c in costs.costs.values()} <= {"published", "illustrative", "not_costed"}
    assert costs.of("not-a-code") == costs.costs["other"].cost


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[1, 2]", "mapping"),
        ("version: 0\nsource: s\nprice_year: p\ncosts: {}", "version"),
        ("version: 1\nprice_year: p\ncosts: {}", "source"),
        ("version: 1\nsource: s\nprice_year: p\ncosts: {}", "without a cost"),
        (
            "version: 1\nsource: s\nprice_year: p\ncosts: {burglery: {cost: 1, basis: published}}",
            "unknown offence types: burglery",
        ),
        ("version: 1\nsource: s\nprice_year: '", "not YAML"),
    ],
)
def test_bad_unit_cost_files_are_refused(document, message):
    with pytest.raises(UnitCostError, match=message):
        parse_unit_costs(document)
    negative = yaml.safe_load(cost_table())
    negative["costs"]["arson"]["cost"] = -5
    with pytest.raises(UnitCostError, match="arson"):
        parse_unit_costs(yaml.safe_dump(negative))


def test_every_released_figure_is_labelled_and_the_json_and_csv_agree():
    protected, _ = protected_2015()
    costs = parse_unit_costs(cost_table())
    query = MetricsQuery((Period.parse("2015Q1"),), ("cohort",))
    report = build_report(query, Access.everything(), {2015: protected}, OFF, 6, costs, AS_OF)
    body = report.as_dict()
    assert body["basis"] == BASIS and "not official" in body["notice"].lower()
    assert body["periods"][0]["status"] == "final"
    assert {c["cohort"] for c in body["cells"]} == {"PPO", "DA", "none", "SAC"}
    assert all(c["basis"] == BASIS and c["status"] == "final" for c in body["cells"])
    rows = list(csv.DictReader(io.StringIO(report.as_csv())))
    assert [r["cohort"] for r in rows] == [c["cohort"] for c in body["cells"]]
    assert all(r["basis"] == BASIS for r in rows)
    assert rows[0]["cohort_size"] == str(body["cells"][0]["cohort_size"])


def test_grant_conditions_and_fields_limit_the_cells():
    """A grant limited to DA with two fields: only DA cells, only those figures, at area level
    only if another grant reaches all areas; nothing else is computed differently."""
    protected, _ = protected_2015()
    costs = parse_unit_costs(cost_table())
    da_only = Access((Scope(cohorts=frozenset({"DA"}), fields=frozenset({"cohort_size", "rate"})),))
    query = MetricsQuery((Period.parse("2015Q1"),), ("area",))
    report = build_report(query, da_only, {2015: protected}, OFF, 6, costs, AS_OF)
    assert report.group_by == ("area", "cohort")  # every grant limits cohorts
    assert [(c.label("area"), c.label("cohort")) for c in report.cells] == [("BIR", "DA")]
    assert set(report.cells[0].figures) == {"cohort_size", "reoffending_rate"}
    assert report.csv_columns()[-2:] == ["cohort_size", "reoffending_rate"]
    assert report.fields == frozenset({"cohort_size", "rate"})
    with pytest.raises(UnpublishedBreakdown):
        build_report(
            MetricsQuery((Period.parse("2015Q1"),), ("area", "agency")),
            da_only,
            {2015: protected},
            OFF,
            6,
            costs,
            AS_OF,
        )


def test_the_contract_documents_json_and_csv(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    operation = spec["paths"][URL]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {"period", "from", "to", "group_by", "area", "cohort"} <= {
        p["name"] for p in operation["parameters"]
    }


# --- through the database and HTTP --------------------------------------------------------


@pytest.fixture
def unit_costs(app, tmp_path, monkeypatch):
    """Point the app at a test unit-cost file; returns a function that rewrites it."""
    path = tmp_path / "unit_costs.yaml"
    path.write_text(cost_table())
    config = app.config["GATEWAY"]
    monkeypatch.setitem(app.config, "GATEWAY", replace(config, metrics_unit_costs=path))
    return lambda text: path.write_text(text)


class People:
    """Inserts synthetic people with a case, a cohort membership and offences."""

    def __init__(self, db):
        self.db = db
        self.agencies = dict(db.execute(sa.select(Agency.code, Agency.id)).all())

    def add(self, *, start, area="BIR", unit="BIR-N", cohort="PPO", agency="CRC", offences=()):
        subject = Subject(
            id=str(uuid.uuid4()),
            given_name="Test",
            family_name="Person",
            date_of_birth=date(1990, 1, 1),
            gender="male",
            area_code=area,
            policing_unit_code=unit,
        )
        self.db.add(subject)
        self.db.flush()
        self.db.add(
            CohortMembership(
                subject_id=subject.id,
                cohort=cohort,
                area_code=area,
                start_date=date(2010, 1, 1),
                end_date=None,
            )
        )
        self.db.add(
            Management(
                subject_id=subject.id,
                agency_id=self.agencies[agency],
                local_case_id=f"T-{subject.id}",
                statutory=True,
                start_date=start,
                end_date=None,
            )
        )
        for kind, on in offences:
            self.db.add(
                Offence(
                    subject_id=subject.id,
                    offence_type=kind,
                    offence_date=on,
                    source="caseload",
                    source_ref=uuid.uuid4().hex,
                    reported_by_agency_id=self.agencies[agency],
                )
            )
        self.db.flush()
        return subject.id

    def many(self, count, **kwargs):
        return [self.add(**kwargs) for _ in range(count)]


@pytest.fixture
def people(db):
    return People(db)


def get(api, agency, query, **headers):
    return api(agency, "get", f"{URL}?{query}", purpose=PERF, headers=headers)


def cell(body, **dims):
    found = [c for c in body["cells"] if all(c[k] == v for k, v in dims.items())]
    assert len(found) == 1, (dims, body["cells"])
    return found[0]


def load_2012q2(people):
    """2012Q2 (no demo data there): 40 Birmingham PPO starts with CRC on 16 April 2012.

    12 reoffend with a burglary (1000) on 1 June; 4 of those also shoplift (10) on 1 Sept.
    10 had a robbery (2000) on 1 December 2011, in the year before.
    Cohort 40; reoffenders 12 (30.0%); further offences 16 (0.4 per person; per reoffender
    withheld: 12 reoffenders < 30); before 10. Cost before 20000, after 12040, difference
    7960, per day 21.81 -> 22. Rounded below force-wide level: reoffenders 10, offences 15,
    costs 20000 / 12000 / 8000."""
    start = date(2012, 4, 16)
    burglary = ("burglary_dwelling", date(2012, 6, 1))
    shoplifting = ("shoplifting", date(2012, 9, 1))
    robbery = ("robbery", date(2011, 12, 1))
    people.many(4, start=start, offences=[burglary, shoplifting, robbery])
    people.many(8, start=start, offences=[burglary])
    people.many(6, start=start, offences=[robbery])
    people.many(22, start=start)


def test_end_to_end_figures_through_the_database_and_http(api, people, unit_costs):
    load_2012q2(people)
    body = get(api, "WMP", "period=2012Q2").get_json()
    assert body["basis"] == BASIS and body["periods"][0]["status"] == "final"
    force = cell(body, area="all")
    assert {
        k: force[k]
        for k in (
            "cohort_size",
            "reoffenders",
            "reoffending_rate",
            "offences",
            "frequency_per_person",
            "frequency_per_reoffender",
            "offences_before",
            "cost_before",
            "cost_after",
            "cost_difference",
            "cost_difference_per_day",
        )
    } == {
        "cohort_size": 40,
        "reoffenders": 12,
        "reoffending_rate": 30.0,
        "offences": 16,
        "frequency_per_person": 0.4,
        "frequency_per_reoffender": None,
        "offences_before": 10,
        "cost_before": 20000,
        "cost_after": 12040,
        "cost_difference": 7960,
        "cost_difference_per_day": 22,
    }
    assert force["withheld"] == ["frequency_per_reoffender"]

    by_area = get(api, "WMP", "period=2012Q2&group_by=area,cohort").get_json()
    bir = cell(by_area, area="BIR", cohort="PPO")
    assert (bir["cohort_size"], bir["reoffenders"], bir["offences"], bir["offences_before"]) == (
        40,
        10,
        15,
        10,
    )
    assert (bir["reoffending_rate"], bir["frequency_per_person"]) == (30.0, 0.4)  # unrounded
    assert (bir["cost_before"], bir["cost_after"], bir["cost_difference"]) == (20000, 12000, 8000)
    assert by_area["query"]["group_by"] == ["area", "cohort"]

    unit_costs(cost_table(2, burglary_dwelling=1500))  # corrected: +500 for each of 12
    corrected = cell(get(api, "WMP", "period=2012Q2").get_json(), area="all")
    assert corrected["cost_after"] == 12040 + 12 * 500
    assert {k: v for k, v in corrected.items() if not k.startswith("cost_")} == {
        k: v for k, v in force.items() if not k.startswith("cost_")
    }


def test_csv_on_request(api, people, unit_costs):
    load_2012q2(people)
    response = get(api, "WMP", "period=2012Q2&group_by=area", Accept="text/csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["period"], r["area"], r["cohort_size"], r["basis"]) for r in rows] == [
        ("2012Q2", "BIR", "40", BASIS)
    ]
    assert rows[0]["frequency_per_reoffender"] == "[c]"
    assert get(api, "WMP", "period=2012Q2", Accept="application/xml").is_json  # JSON default


def test_ranges_report_each_period_and_label_provisional_ones(api, people, unit_costs):
    load_2012q2(people)
    body = get(api, "WMP", "from=2012Q1&to=2012Q3").get_json()
    assert [p["period"] for p in body["periods"]] == ["2012Q1", "2012Q2", "2012Q3"]
    assert [c["cohort_size"] for c in body["cells"]] == [0, 40, 0]
    today = datetime.now(UTC).date()
    current = f"{today.year}Q{(today.month - 1) // 3 + 1}"
    recent = get(api, "WMP", f"period={current}").get_json()
    assert recent["periods"][0]["status"] == "provisional"
    assert all(c["status"] == "provisional" for c in recent["cells"])


@pytest.mark.parametrize(
    "query",
    [
        "period=2015Q5",
        "period=15Q1",
        "period=2015-Q1",
        "period=",
        "period=1999",
        "period=2015Q1&group_by=postcode",
        "period=2015Q1&group_by=area,postcode",
        "period=2015Q1&group_by=area,,cohort",
        "from=2015Q3&to=2015Q1",
        "from=2015&to=2016Q1",
        "from=2015Q1",
        "to=2015Q1",
        "period=2015Q1&from=2015Q1&to=2015Q2",
        "group_by=area",
        "from=2000Q1&to=2015Q1",
        "period=2015Q1&area=NARNIA",
        "period=2015Q1&cohort=ppo",
        "period=2015Q1&subject=x",
        "period=2015Q1&group_by=area,cohort,agency",
        "period=2015Q1&group_by=policing_unit,cohort",
        "period=2015Q1&cohort=PPO&group_by=area,agency",
        "period=2015%0A",
        "from=2015Q1%0A&to=2015Q2",
        "from=2015Q1&to=2015Q2%0A",
        "period=2015Q1&group_by=cohort%0A",
    ],
)
def test_malformed_queries_are_problems(api, query):
    response = get(api, "WMP", query)
    assert 400 <= response.status_code < 500, response.get_json()
    assert response.content_type == PROBLEM


def test_callers_without_a_metrics_grant_are_refused(api):
    provider = get(api, "VSP-MENTOR", "period=2015Q1")  # no metrics:read scope at all
    assert provider.status_code == 403 and provider.content_type == PROBLEM
    assert provider.get_json()["type"].endswith("insufficient-scope")
    wrong_purpose = api("WMP", "get", f"{URL}?period=2015Q1", purpose="iom-case-management")
    assert wrong_purpose.status_code == 403
    assert wrong_purpose.get_json()["type"].endswith("no-metrics-agreement")
    expired = api("NPS", "get", f"{URL}?period=2015Q1", purpose="iom-case-management")
    assert expired.status_code == 403  # the legacy probation trust agreement has expired
    assert "cells" not in expired.get_json()


def test_birmingham_sees_birmingham_only(api, people, unit_costs, db):
    load_2012q2(people)
    people.many(30, start=date(2012, 5, 1), area="COV", unit="COV-N")
    for query in (
        "period=2012Q2",
        "period=2012Q2&group_by=cohort",
        "period=2012Q2&group_by=agency",
    ):
        body = get(api, "LA-BIR", query).get_json()
        assert "area" in body["query"]["group_by"]  # always broken down by area
        assert {c["area"] for c in body["cells"]} == {"BIR"}, query
    assert cell(get(api, "LA-BIR", "period=2012Q2").get_json(), area="BIR")["cohort_size"] == 40
    assert get(api, "LA-BIR", "period=2012Q2&area=COV").get_json()["cells"] == []
    refused = get(api, "LA-BIR", "period=2012Q2&group_by=cohort,agency")  # + area: 3 ways
    assert refused.status_code == 422 and "your agreements add area" in refused.get_json()["detail"]
    assert get(api, "WMP", "period=2012Q2&group_by=cohort,agency").status_code == 200
    wmp = get(api, "WMP", "period=2012Q2&group_by=area").get_json()
    assert {c["area"] for c in wmp["cells"]} == {"BIR", "COV"}
    assert cell(get(api, "WMP", "period=2012Q2").get_json(), area="all")["cohort_size"] == 70

    refusal, event, previous = (
        json.loads(b)
        for b in db.scalars(
            sa.select(AuditEventRow.body)
            .where(AuditEventRow.agency == "LA-BIR")
            .order_by(AuditEventRow.id.desc())
            .limit(3)
        ).all()
    )
    assert (refusal["decision"], refusal["reason"], refusal["status"]) == (
        "deny",
        "unpublished_breakdown",
        422,
    )
    assert (event["resource_type"], event["decision"], event["purpose"]) == (
        "metrics",
        "permit",
        PERF,
    )
    assert event["subject_ids"] == []
    assert event["details"]["cells"] == []  # the area=COV query released nothing
    assert event["grant"] == "metrics-birmingham"
    assert previous["details"]["cells"] == ["2012Q2|BIR|all|all|all"]
    assert previous["details"]["query"] == "periods=2012Q2 group_by="
    assert set(previous["fields"]) <= {
        "cohort_size",
        "reoffenders",
        "offences",
        "rate",
        "frequency",
        "cost",
    }


def test_the_board_pack_from_the_command_line(app, db, people, unit_costs, monkeypatch):
    """`iom-gateway metrics report`: every area, the same disclosure control, audited."""
    from click.testing import CliRunner

    import gateway.cli

    load_2012q2(people)
    people.many(3, start=date(2012, 5, 1), area="COV", unit="COV-N")  # too few: suppressed
    people.many(20, start=date(2012, 5, 1), area="DUD", unit="DUD-N")  # hidden beside COV
    monkeypatch.setattr(gateway.cli, "_app", lambda: app)  # the test's app and transaction
    runner = CliRunner()
    result = runner.invoke(
        gateway.cli.main, ["metrics", "report", "--period", "2012Q2", "--group-by", "area"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["area"]: r for r in csv.DictReader(io.StringIO(result.output))}
    assert (rows["BIR"]["cohort_size"], rows["BIR"]["basis"]) == ("40", BASIS)
    assert rows["COV"]["cohort_size"] == rows["DUD"]["cohort_size"] == "[c]"
    as_json = runner.invoke(
        gateway.cli.main,
        ["metrics", "report", "--period", "2012Q2", "--group-by", "", "--format", "json"],
    )
    assert json.loads(as_json.output)["cells"][0]["cohort_size"] == 63  # force-wide, exact
    event = json.loads(
        db.scalar(
            sa.select(AuditEventRow.body)
            .where(AuditEventRow.resource_type == "metrics")
            .order_by(AuditEventRow.id.desc())
            .limit(1)
        )
    )
    assert (event["method"], event["reason"], event["details"]["format"]) == (
        "CLI",
        "admin",
        "json",
    )
    assert event["details"]["cells"] == ["2012Q2|all|all|all|all"] and event["subject_ids"] == []
    bad = runner.invoke(gateway.cli.main, ["metrics", "report", "--period", "2012Q9"])
    assert bad.exit_code == 1 and "period" in bad.output
