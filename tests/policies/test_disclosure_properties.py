"""Properties of disclosure over generated records and generated (loader-valid) agreements.

Whatever the grants, a pseudonymised disclosure never carries a name, an identifier, a full date
of birth, a full postcode, a phone number, an address or free text, and never a field that no
permitting grant names. The check is on the serialised JSON, the bytes a recipient would get.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.disclose import disclose
from policies.engine import RecordContext, compile_policy, decide
from policies.identifiers import pnc_check_character
from policies.pseudonyms import pseudonym_domain, pseudonym_for
from policies.vocabulary import (
    AREAS,
    COHORTS,
    DEMO_AGENCIES,
    FIELDS,
    GROUPS,
    LEVELS,
    PATHWAYS,
    RESTRICTED,
    expand_field,
)
from tests.policies.helpers import agreement, grant

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
KEY = bytes(range(32))
RECIPIENTS = sorted(code for code, kind in DEMO_AGENCIES.items() if kind != "ig_audit")
GENERALISED = {"date_of_birth": {"year_of_birth", "age_band"}, "postcode": {"postcode_district"}}

# Distinctive prefixes so a leaked value cannot be confused with anything legitimately released.
words = st.text(string.ascii_lowercase, min_size=3, max_size=10)
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


@st.composite
def postcodes(draw: st.DrawFn) -> str:
    outward = draw(
        st.sampled_from(["B1", "B15", "WS1", "CV1", "DY4", "WV10", "B90", "SW1A", "W1A"])
    )
    inward = (
        draw(st.integers(0, 9)),
        *draw(st.lists(st.sampled_from(INWARD_LETTERS), min_size=2, max_size=2)),
    )
    spacing = draw(st.sampled_from(["", " ", "  "]))
    text = f"{outward}{spacing}{''.join(map(str, inward))}"
    return draw(st.sampled_from([text, text.lower()]))


@st.composite
def pncs(draw: st.DrawFn) -> str:
    year, serial = draw(st.integers(0, 99)), draw(st.integers(1, 9_999_999))
    return f"{year:02d}/{serial:07d}{pnc_check_character(year, serial)}"


@st.composite
def subjects(draw: st.DrawFn) -> dict[str, Any]:
    letters = st.sampled_from(string.ascii_uppercase)
    return {
        "ref": f"subj-{draw(st.uuids()).hex}",
        "given_name": f"Given{draw(words)}",
        "family_name": f"Family{draw(words)}",
        "date_of_birth": draw(st.dates(date(1940, 1, 1), date(2012, 12, 31))),
        "gender": draw(st.sampled_from(["F", "M", "X"])),
        "ethnicity": draw(st.sampled_from(["W1", "A2", "B1"])),
        "address_line": f"{draw(st.integers(1, 999))} Addr{draw(words)} Road",
        "postcode": draw(postcodes()),
        "phone": "07"
        + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=9, max_size=9))),
        "identifiers": {
            "pnc": draw(pncs()),
            "crn": draw(letters) + f"{draw(st.integers(0, 999_999)):06d}",
            "nomis": draw(letters) + f"{draw(st.integers(0, 9999)):04d}" + draw(letters) * 2,
        },
        "area": draw(st.sampled_from(sorted(AREAS))),
        "policing_unit": "LPU-" + draw(st.sampled_from(sorted(AREAS))),
        "cohorts": draw(st.lists(st.sampled_from(sorted(COHORTS)), min_size=1, unique=True)),
        "risk": {
            "reoffending_score": draw(st.floats(0, 1)),
            "reoffending_band": draw(st.sampled_from(["low", "medium", "high"])),
            "serious_harm_level": draw(st.sampled_from(["low", "medium", "high", "very_high"])),
            "assessed_at": "2025-01-01T00:00:00Z",
        },
        "needs": {
            p: draw(st.sampled_from(["low", "high"]))
            for p in draw(st.sets(st.sampled_from(PATHWAYS)))
        },
        "management": [
            {
                "agency": "CRC",
                "statutory": True,
                "offender_manager_ref": f"OMREF{draw(words)}",
                "since": "2020-05-05",
            }
        ],
        "linked_victims": [{"victim_ref": f"VICREF{draw(words)}", "relationship": "partner"}],
        "updated_at": "2025-05-30T10:00:00Z",
    }


def secrets_of(record: dict[str, Any]) -> list[str]:
    """Every value that must never appear in a pseudonymised disclosure of `record`."""
    postcode = record["postcode"]
    return [
        record["ref"],
        record["given_name"],
        record["family_name"],
        record["date_of_birth"].isoformat(),
        postcode,
        postcode.replace(" ", "").upper(),
        record["phone"],
        record["address_line"],
        *record["identifiers"].values(),
        record["management"][0]["offender_manager_ref"],
        record["linked_victims"][0]["victim_ref"],
    ]


def context_for(record: dict[str, Any], agency: str) -> RecordContext:
    age = NOW.date().year - record["date_of_birth"].year  # close enough: conditions use ranges
    return RecordContext(
        cohorts=frozenset(record["cohorts"]),
        area=record["area"],
        age=age,
        managed_by=frozenset({agency}),
        active_referrals_to=frozenset({agency}),
        accepted_with_consent_by=frozenset({agency}),
    )


@st.composite
def grants(draw: st.DrawFn, record: dict[str, Any], recipient: str, levels: list[str]) -> dict:
    entries = list(FIELDS["subject"]) + [f"group:{g}" for g in GROUPS["subject"]]
    if DEMO_AGENCIES[recipient] == "voluntary":
        entries = [
            e for e in entries if not set(expand_field("subject", e)) & RESTRICTED["subject"]
        ]
    fields = draw(st.lists(st.sampled_from(entries), min_size=1, max_size=8, unique=True))
    level = draw(st.sampled_from(levels))
    expanded = {f for e in fields for f in expand_field("subject", e) or ()}
    conditions: dict[str, Any] = {}
    if draw(st.booleans()):
        conditions["cohorts"] = [record["cohorts"][0]]
    if draw(st.booleans()):
        conditions["areas"] = [record["area"]]
    if draw(st.booleans()):
        conditions["relationships"] = draw(
            st.lists(
                st.sampled_from(
                    [
                        "in_recipient_caseload",
                        "active_referral_to_recipient",
                        "accepted_referral_with_consent",
                    ]
                ),
                min_size=1,
                unique=True,
            )
        )
    return grant(
        id=f"g{draw(st.integers(0, 10**6))}",
        recipients=[recipient],
        fields=fields,
        level=level,
        age_band=level == "pseudonymised" and "date_of_birth" in expanded and draw(st.booleans()),
        conditions=conditions,
    )


@st.composite
def scenarios(draw: st.DrawFn, levels: list[str]) -> tuple[dict[str, Any], str, list[dict]]:
    record = draw(subjects())
    recipient = draw(st.sampled_from(RECIPIENTS))
    count = draw(st.integers(1, 3))
    drawn = [draw(grants(record, recipient, levels)) for _ in range(count)]
    unique = {g["id"]: g for g in drawn}
    return record, recipient, list(unique.values())


def decide_and_disclose(record: dict, recipient: str, grant_docs: list[dict]) -> tuple[Any, dict]:
    policy = compile_policy([agreement(*grant_docs)])  # through the real loader's checks
    decision = decide(
        policy,
        agency=recipient,
        agency_kind=DEMO_AGENCIES[recipient],
        action="read",
        resource="subject",
        purpose="testing",
        record=context_for(record, recipient),
        now=NOW,
    )
    assert decision.permitted  # every generated condition holds on the generated record
    domain = pseudonym_domain(decision.pseudonym_agreement or "test-isa", recipient)
    pseudonym = pseudonym_for(KEY, 1, domain, record["ref"])
    released = disclose(record, decision, pseudonym=pseudonym, today=NOW.date())
    return decision, released


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios(levels=["pseudonymised"]))
def test_pseudonymised_disclosure_never_leaks(scenario: tuple) -> None:
    record, recipient, grant_docs = scenario
    _, released = decide_and_disclose(record, recipient, grant_docs)
    wire = json.dumps(released, default=str)
    for secret in secrets_of(record):
        assert secret not in wire, f"{secret!r} leaked in {wire}"
    for phrase in ("Given", "Family", "Addr", "OMREF", "VICREF", "reoffending_score"):
        assert phrase not in wire
    named = {f for g in grant_docs for e in g["fields"] for f in expand_field("subject", e) or ()}
    allowed = set(named) | {alias for f in named for alias in GENERALISED.get(f, ())}
    assert set(released) <= allowed
    assert "year_of_birth" not in released or "age_band" not in released
    if "ref" in released:
        assert released["ref"].startswith("psn1_")


@PROPERTY
@given(scenarios(levels=list(LEVELS[:2])))
def test_each_field_is_released_at_a_level_some_permitting_grant_gives_it(scenario: tuple) -> None:
    record, recipient, grant_docs = scenario
    decision, released = decide_and_disclose(record, recipient, grant_docs)
    for name, level in decision.fields.items():
        levels_for_field = {
            g["level"]
            for g in grant_docs
            for e in g["fields"]
            if name in (expand_field("subject", e) or ())
        }
        assert level in levels_for_field
        assert level == min(levels_for_field, key=LEVELS.index)
        if level == "identified":
            assert name not in released or released[name] == record[name]
    wire = json.dumps(released, default=str)
    for name in ("given_name", "family_name", "phone", "address_line"):
        if decision.fields.get(name) != "identified":
            assert record[name] not in wire
    if DEMO_AGENCIES[recipient] == "voluntary":
        assert "linked_victims" not in released
