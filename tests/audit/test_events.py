"""The event model and its canonical bytes."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.events import (
    AuditEvent,
    CanonicalFormError,
    EventKind,
    canonical_bytes,
    canonical_json,
    event_from_canonical,
    leaf_hash,
)
from tests.audit.helpers import make_event


def test_event_kinds_are_the_agreed_names() -> None:
    assert {str(k) for k in EventKind} == {
        "api.access", "token.issued", "token.refused", "token.revoked", "agreement.loaded",
        "agreement.retired", "client.registered", "client.revoked", "agency.registered",
        "agency.suspended", "agency.reinstated", "key.rotated",
    }


def test_canonical_form_is_pinned() -> None:
    """Golden bytes: any change here changes every leaf hash ever computed."""
    event = AuditEvent(
        event_id="0123456789abcdef0123456789abcdef",
        kind=EventKind.API_ACCESS,
        time=datetime(2026, 1, 5, 10, 30, 0, 5, tzinfo=timezone(timedelta(hours=1))),
        decision="deny",
        subject_ids=["00000000-0000-0000-0000-000000000002",
                     "00000000-0000-0000-0000-000000000001",
                     "00000000-0000-0000-0000-000000000002"],
        fields=["name", "date_of_birth"],
        status=403,
        details={"zeta": [1, True, None, "é"], "alpha": "tab\there"},
    )
    expected = (
        '{"action":null,"agency":null,"agreement":null,"client_id":null,"decision":"deny",'
        '"details":{"alpha":"tab\\there","zeta":[1,true,null,"é"]},"disclosure_level":null,'
        '"duration_us":null,"event_id":"0123456789abcdef0123456789abcdef",'
        '"fields":["date_of_birth","name"],"grant":null,"kind":"api.access","method":null,'
        '"on_behalf_of":null,"purpose":null,"reason":null,"request_id":null,'
        '"resource_type":null,"route":null,"status":403,'
        '"subject_ids":["00000000-0000-0000-0000-000000000001",'
        '"00000000-0000-0000-0000-000000000002"],"time":"2026-01-05T09:30:00.000005Z"}'
    ).encode()
    assert canonical_bytes(event) == expected
    assert event_from_canonical(expected) == event
    assert leaf_hash(expected) == hashlib.sha256(b"\x00" + expected).digest()


def test_leaf_hash_of_empty_input() -> None:
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_normalisation() -> None:
    upper = str(uuid.UUID(int=7)).upper()
    event = make_event(subject_ids=[upper, uuid.UUID(int=7), uuid.UUID(int=3).hex])
    assert event.subject_ids == (str(uuid.UUID(int=3)), str(uuid.UUID(int=7)))
    assert event.time.tzinfo is UTC
    assert event.kind is EventKind.API_ACCESS
    assert len(AuditEvent(kind="token.issued", time=datetime.now(UTC),
                          decision="permit").event_id) == 32


@pytest.mark.parametrize("overrides", [
    {"time": datetime(2026, 1, 1)},  # naive
    {"decision": "maybe"},
    {"kind": "api.read"},
    {"subject_ids": ["Jane Smith"]},  # names must never reach the log
    {"subject_ids": "00000000-0000-0000-0000-000000000001"},
    {"fields": "name"},
    {"status": 200.0},
    {"status": True},
    {"duration_us": 2**60},
    {"event_id": "not-a-uuid"},
    {"event_id": "0123456789ABCDEF0123456789ABCDEF"},
    {"agency": 5},
    {"details": {"ratio": 0.5}},
    {"details": {"nested": {"a": 1}}},
    {"details": {"list": [1.5]}},
    {"details": {1: "x"}},
])
def test_rejects_values_without_canonical_form(overrides: dict) -> None:
    with pytest.raises(CanonicalFormError):
        make_event(**overrides)


def test_canonical_json_is_the_jcs_subset() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "\u2028", "\x1f\"\\"]}) == (
        b'{"a":[true,null,"\xe2\x80\xa8","\\u001f\\"\\\\"],"b":1}'
    )
    # JCS sorts keys by UTF-16 code units: U+FF61 sorts after the surrogate pair of U+1F600.
    assert canonical_json({"\uff61": 1, "\U0001f600": 2}).decode() == '{"😀":2,"｡":1}'
    for bad in (1.0, float("nan"), {"x": [0.1]}, 2**53, "\ud800", {1: 2}, b"bytes"):
        with pytest.raises(CanonicalFormError):
            canonical_json(bad)


def test_only_exactly_canonical_bytes_decode() -> None:
    data = canonical_bytes(make_event(3))
    parsed = json.loads(data)
    for variant in (
        json.dumps(parsed).encode(),  # spaces
        json.dumps(dict(reversed(parsed.items())), separators=(",", ":")).encode(),
        data.replace(b'"status":200', b'"status":200.0'),
        data[:-1] + b',"extra":1}',
        data.replace(b"Z\"", b"+00:00\""),
    ):
        with pytest.raises(CanonicalFormError):
            event_from_canonical(variant)


texts = st.text(max_size=12)
optional_texts = st.none() | texts
scalars = st.none() | st.booleans() | texts | st.integers(-(2**53) + 1, 2**53 - 1)


@settings(max_examples=150, deadline=None)
@given(
    time=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))])),
    kind=st.sampled_from(list(EventKind)),
    decision=st.sampled_from(["permit", "deny"]),
    strings=st.fixed_dictionaries({name: optional_texts for name in (
        "request_id", "client_id", "agency", "on_behalf_of", "purpose", "method", "route",
        "action", "resource_type", "agreement", "grant", "disclosure_level", "reason")}),
    subjects=st.lists(st.uuids(), max_size=4),
    fields=st.lists(texts, max_size=4),
    status=st.none() | st.integers(100, 599),
    details=st.dictionaries(texts, scalars | st.lists(scalars, max_size=3), max_size=4),
)
def test_round_trip(time, kind, decision, strings, subjects, fields, status, details) -> None:
    try:
        event = AuditEvent(kind=kind, time=time, decision=decision, subject_ids=subjects,
                           fields=fields, status=status, details=details, **strings)
        data = canonical_bytes(event)
    except CanonicalFormError:
        return  # e.g. a lone surrogate in generated text
    assert event_from_canonical(data) == event
    assert canonical_bytes(event_from_canonical(data)) == data
