"""The fast path for caseload batches agrees with the schema: whatever it accepts, the schema
accepts with an equal result; whatever it is unsure of goes to the schema."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from policies.identifiers import pnc_check_character
from schemas.caseload import FAST_PATH_RULES, CaseloadSyncSchema, StrictSchema
from schemas.caseload_fast import load_batch

TODAY = datetime.now(UTC).date()
SCHEMA = CaseloadSyncSchema()


def schema_only(data: Any) -> dict | None:
    """The schema's own answer (its fast path bypassed), None for a validation error."""
    try:
        return StrictSchema.load(SCHEMA, data)
    except ValidationError:
        return None


def fast(data: Any) -> dict | None:
    return SCHEMA.load(data) if _fast_accepts(data) else None


def _fast_accepts(data: Any) -> bool:
    return load_batch(data, FAST_PATH_RULES) is not None


def record(n: int) -> dict:
    serial = 2_000_000 + n
    return {
        "local_case_id": f"CRC-F-{n}",
        "identifiers": {
            "pnc": f"19/{serial:07d}{pnc_check_character(19, serial)}",
            "crn": "z123456",
        },
        "given_name": "Alex",
        "family_name": "Testperson",
        "date_of_birth": "1990-04-01",
        "gender": "male",
        "area": "BIR",
        "status": "active",
        "statutory": True,
        "offender_manager_ref": "OM-1",
        "start_date": "2020-01-31",
        "risk": {
            "serious_harm_level": "high",
            "reoffending_score": 40,
            "assessed_on": "2024-05-01",
        },
        "needs": {"ete": "high", "accommodation": "low"},
        "cohorts": ["SAC", "PPO"],
        "offences": [{"offence_type": "shoplifting", "offence_date": "2024-02-29"}],
    }


# Values that a field of some type might wrongly be given, or rightly be given.
ODD = [
    None, True, False, 0, 1, -1, 55, 101, 1.0, 40.5, "", " ", "x", "yes", "true", "1",
    "A" * 101, "Smith\nJones", "OM\ud800", "é", "1990-02-30", "1990-4-1", "19900401",
    "1990-04-01T00:00", "2999-01-01", "1899-12-31", "1999-12-31", "2000-01-01",
    TODAY.isoformat(), (TODAY + timedelta(days=1)).isoformat(), "active", "terminated",
    "paused", "high", "very_high", "extreme", "BIR", "LON", "PPO", "ROBBERS", "ete", "hobbies",
    "snapshot", "upsert", "C1\n", "C" * 41, "CRC T 1", "00000000-0000-4000-8000-000000000000",
    "12/123A", "Z1234AB", "AB", [], ["PPO"], ["PPO", "PPO"], {}, {"pnc": "x"}, {"nhs": "1"},
    {"crn": "Z000001"}, {"ete": "high"}, {"assessed_on": "2024-01-01"},
    {"assessed_on": "2024-01-01", "reoffending_score": None},
    {"assessed_on": "2024-01-01", "serious_harm_level": None, "reoffending_score": 0},
    [{"offence_type": "shoplifting", "offence_date": "2024-01-01"}],
    [{"offence_type": "jaywalking", "offence_date": "2024-01-01"}],
]  # fmt: skip
RECORD_FIELDS = [*record(0), "nickname"]
TOP_FIELDS = ["mode", "atomic", "confirm_end", "snapshot_id", "records", "colour"]


@st.composite
def batches(draw: st.DrawFn) -> dict:
    size = draw(st.integers(1, 3))
    records = [record(n) for n in range(size)]
    body: dict[str, Any] = {"records": records}
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(["top", "record", "risk", "identifiers", "delete"]))
        value = copy.deepcopy(draw(st.sampled_from(ODD)))
        target = records[draw(st.integers(0, size - 1))]
        if where == "top":
            body[draw(st.sampled_from(TOP_FIELDS))] = value
        elif where == "record":
            target[draw(st.sampled_from(RECORD_FIELDS))] = value
        elif where == "delete":
            target.pop(draw(st.sampled_from(RECORD_FIELDS)), None)
        elif isinstance(target.get(where), dict):
            name = draw(st.sampled_from(["pnc", "crn", "nomis", "serious_harm_level",
                                         "reoffending_score", "assessed_on"]))  # fmt: skip
            target[where][name] = value
    return body


@settings(max_examples=600, deadline=None)
@given(batches())
def test_whatever_the_fast_path_accepts_the_schema_accepts_alike(body):
    if _fast_accepts(body):
        assert schema_only(body) == fast(body)


def test_the_fast_path_takes_an_ordinary_batch():
    body = {
        "records": [record(n) for n in range(5)],
        "snapshot_id": "00000000-0000-4000-8000-000000000000",
    }
    assert _fast_accepts(body)
    assert fast(body) == schema_only(body)
    assert fast(body)["records"][0]["identifiers"]["crn"] == "Z123456"


def test_what_the_fast_path_is_unsure_of_the_schema_decides():
    spelt_otherwise = {"records": [{**record(1), "date_of_birth": "19900401"}]}
    assert not _fast_accepts(spelt_otherwise)
    assert SCHEMA.load(spelt_otherwise)["records"][0]["date_of_birth"].isoformat() == "1990-04-01"
    one_for_true = {"records": [{**record(1), "statutory": 1}]}
    assert not _fast_accepts(one_for_true)
    with pytest.raises(ValidationError) as refused:  # the schema's error, not a fast-path one
        SCHEMA.load(one_for_true)
    assert refused.value.messages == {"records": {0: {"statutory": ["Not a valid boolean."]}}}
