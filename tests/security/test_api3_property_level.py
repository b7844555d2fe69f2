"""OWASP API3:2023 Broken Object Property Level Authorization.

Input: every operation with a JSON body refuses unknown fields and the fields only the
gateway sets (those its responses carry but its request schema does not: ref, status,
from_agency, history, disclosure...), at the top level and inside nested objects; every
operation with a query string refuses unknown parameters. Nothing changes.

Output: a hypothesis property over agency x purpose x endpoint x filters: every record in a
response, parsed from the response bytes, carries only fields that `policies.engine.decide`
releases to that caller for that purpose (at pseudonymised level only in their generalised
form), and no value of an identifying field it withholds appears anywhere in the record.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.models import Agency, Referral
from gateway.services.decisions import decide_on_subject
from gateway.services.pseudonymisation import resolve_pseudonym
from gateway.services.referral_disclosure import decide_on_referral
from gateway.services.subjects import SubjectRecord, full_record, load_subjects
from policies.vocabulary import (
    PSEUDONYMISED,
    PSEUDONYMISED_KEYS,
    PSEUDONYMISED_WITHHELD,
    SUBJECT_KEY,
)
from tests.security.conftest import (
    API,
    caller_for,
    concrete_path,
    data_row_counts,
    fuzz_examples,
    minimal_instance,
    resolve,
)

EXTRA_KEYS = {
    "subject": {"disclosure"},
    "referral": {"subject", "allowed_transitions", "disclosure"},
}
IDENTIFYING_VALUES = ("given_name", "family_name", "phone", "address_line", "postcode")

# A test-only agreement (as in tests/gateway/test_subjects.py): providers list and read
# Birmingham subjects pseudonymised, with identifying fields named that must stay withheld.
PSEUDONYMISED_AGREEMENT = (
    Path(__file__).parents[1] / "data" / "test-area-profile.yaml"
).read_text()


# -- input --------------------------------------------------------------------------------


def response_properties(operation) -> set[str]:  # type: ignore[no-untyped-def]
    """Top-level fields of the operation's success response (what the gateway sets)."""
    for status, response in operation.spec["responses"].items():
        if status.startswith("2"):
            response = resolve(operation.root, response)
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if schema:
                return set(resolve(operation.root, schema).get("properties", {}))
    return set()


def nested_objects(schema: dict, root: dict, at: tuple = ()) -> list[tuple[str, ...]]:
    """Paths of the object-valued properties of a request body (to plant fields inside)."""
    found = []
    for name, prop in resolve(root, schema).get("properties", {}).items():
        prop = resolve(root, prop)
        if prop.get("type") == "object" and "properties" in prop:
            found.append((*at, name))
            found.extend(nested_objects(prop, root, (*at, name)))
    return found


def planted(body: dict, path: tuple[str, ...], name: str, value: object) -> dict:
    copy = json.loads(json.dumps(body))
    node = copy
    for part in path:
        node = node.setdefault(part, {})
    node[name] = value
    return copy


def named_in_errors(response, name: str) -> bool:  # type: ignore[no-untyped-def]
    return f'"{name}"' in json.dumps(response.get_json().get("errors", {}))


def test_unknown_and_read_only_fields_are_refused(
    api, db, operations, purposes_by_agency, known, figures
):
    with_body = [o for o in operations if o.body_schema is not None]
    assert with_body
    subject = next(iter(known.refs(f"{API}/subjects")))
    overrides = {"subject_ref": subject, "to_agency": "VSP-MENTOR", "scheme": "PNC"}
    for operation in with_body:
        agency, purpose = caller_for(api, operation, purposes_by_agency)  # may create one
        before = data_row_counts(db)
        path = operation.path.replace("{", "").replace("}", "")
        body = minimal_instance(operation.body_schema, operation.root, overrides)
        attempts = [((), "zz_unknown", 1)]
        attempts += [
            (nested, "zz_unknown", "x")
            for nested in nested_objects(operation.body_schema, operation.root)
        ]
        declared = set(resolve(operation.root, operation.body_schema).get("properties", {}))
        attempts += [
            ((), name, "gateway-set") for name in sorted(response_properties(operation) - declared)
        ]
        assert len(attempts) > 1 or operation.path.endswith("/search") is False
        for at, name, value in attempts:
            response = api(
                agency, operation.method, path, purpose=purpose, json=planted(body, at, name, value)
            )
            figures.case(invalid=True, status=response.status_code)
            assert response.status_code == 422, (operation.label, at, name, response.get_json())
            assert named_in_errors(response, name), (operation.label, name)
        figures.notes["body_operations"] += 1
        assert data_row_counts(db) == before, operation.label


def unknown_query_answers(api, operations, purposes_by_agency, seeded, declared: bool):  # type: ignore[no-untyped-def]
    for operation in operations:
        if operation.method != "get" or bool(operation.parameters("query")) != declared:
            continue
        agency, purpose = caller_for(api, operation, purposes_by_agency, seeded)
        path = concrete_path(operation.path, seeded)
        yield operation, api(agency, "get", f"{path}?zz_unknown=1", purpose=purpose)


def test_unknown_query_parameters_are_refused(api, operations, purposes_by_agency, figures):
    """Where an operation takes a query string, a parameter it does not declare is a 422."""
    for operation, response in unknown_query_answers(
        api, operations, purposes_by_agency, None, True
    ):
        figures.case(invalid=True, status=response.status_code)
        assert response.status_code == 422, (operation.label, response.status_code)
        assert named_in_errors(response, "zz_unknown")


def test_operations_without_a_query_refuse_one(api, operations, purposes_by_agency, known, figures):
    lenient = [
        operation.label
        for operation, response in unknown_query_answers(
            api, operations, purposes_by_agency, known, False
        )
        if response.status_code < 400
    ]
    figures.notes["ignore_unknown_query"] = len(lenient)
    print("operations ignoring an unknown query parameter:", lenient)
    assert not lenient, lenient


# -- output -------------------------------------------------------------------------------


@pytest.fixture
def pseudonymised_agreement(load_agreement, seeded):  # after seeding: its listings are cached
    load_agreement(PSEUDONYMISED_AGREEMENT)


def released_keys(decision, resource: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The output keys a decision can produce: a field at identified level keeps its name;
    at pseudonymised level the key stays, is generalised (date of birth to year or band,
    postcode to district) or is withheld (identifying fields other than those two)."""
    keys = set(EXTRA_KEYS[resource])
    for name, level in decision.fields.items():
        if level != PSEUDONYMISED or name == SUBJECT_KEY.get(resource):
            keys.add(name)
        elif name in PSEUDONYMISED_WITHHELD.get(resource, ()):
            continue
        elif name == "date_of_birth":
            keys |= {"year_of_birth", "age_band"}
        elif name == "postcode":
            keys.add("postcode_district")
        else:
            keys.add(name)
    return keys


def check_nested(record: dict, decision, resource: str) -> None:  # type: ignore[no-untyped-def]
    for name, level in decision.fields.items():
        allowed = PSEUDONYMISED_KEYS.get((resource, name))
        if level != PSEUDONYMISED or allowed is None or record.get(name) is None:
            continue
        values = record[name] if isinstance(record[name], list) else [record[name]]
        for value in values:
            assert set(value) <= allowed, (resource, name, set(value) - allowed)


def identifying_values(subject: SubjectRecord) -> dict[str, str]:
    record = full_record(subject, date.today())
    values = {k: str(record[k]) for k in IDENTIFYING_VALUES if record.get(k)}
    values["date_of_birth"] = record["date_of_birth"].isoformat()
    values.update({f"identifiers.{k}": v for k, v in record["identifiers"].items()})
    return values


class Checker:
    def __init__(self, app, db, policy) -> None:  # type: ignore[no-untyped-def]
        self.app, self.db, self.policy = app, db, policy
        self.now = datetime.now(UTC)
        self.agencies = {a.code: a for a in db.scalars(sa.select(Agency))}
        self.records = 0

    def subject_of(self, ref: str, agency: str) -> SubjectRecord:
        if ref.startswith("psn"):
            grace = timedelta(days=self.app.config["GATEWAY"].pseudonym_grace_days)
            resolved = resolve_pseudonym(self.db, ref, agency, grace, self.now)
            assert resolved is not None, f"{agency} was given a pseudonym it cannot use"
            ref = resolved[0]
        subject = load_subjects(self.db, [ref]).get(ref)
        assert subject is not None
        return subject

    def subject(self, record: dict, agency: str, purpose: str, action: str) -> None:
        self.records += 1
        subject = self.subject_of(record["ref"], agency)
        a = self.agencies[agency]
        decision = decide_on_subject(
            self.policy, a.code, a.kind, action, purpose, subject, self.now
        )
        assert decision.permitted, f"{agency} got a subject it may not {action}"
        extra = set(record) - released_keys(decision, "subject")
        assert not extra, f"{agency} ({purpose}) was sent {sorted(extra)}"
        check_nested(record, decision, "subject")
        assert record["disclosure"]["level"] == decision.level
        assert record["ref"].startswith("psn") == bool(decision.pseudonym_agreement)
        text = json.dumps(record)
        for field, value in identifying_values(subject).items():
            base = field.split(".")[0]
            if decision.fields.get(base) == PSEUDONYMISED or base not in decision.fields:
                assert json.dumps(value)[1:-1] not in text, (
                    f"{field} of a subject leaked to {agency}"
                )

    def referral(self, record: dict, agency: str, purpose: str, action: str) -> None:
        self.records += 1
        referral = self.db.get(Referral, record["ref"])
        decision = decide_on_referral(
            self.policy, self.agencies[agency], action, purpose, referral, self.now
        )
        assert decision.permitted
        extra = set(record) - released_keys(decision, "referral")
        assert not extra, f"{agency} ({purpose}) was sent {sorted(extra)} of a referral"
        check_nested(record, decision, "referral")
        if "subject" in record:
            self.subject(record["subject"], agency, purpose, "read")


ENDPOINTS = ("subjects", "subject", "referrals", "referral")


@settings(
    max_examples=fuzz_examples(25),
    deadline=None,
    derandomize=os.environ.get("FUZZ_EXAMPLES") is None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_responses_carry_only_granted_fields(
    api, app, db, policy, seeded, pseudonymised_agreement, purposes_by_agency, figures, data
):
    checker = Checker(app, db, app.extensions["gateway.agreements"].current())
    agency = data.draw(st.sampled_from(sorted(purposes_by_agency)), label="agency")
    every_purpose = sorted(app.extensions["gateway.agreements"].current().purposes)
    own = st.sampled_from(purposes_by_agency[agency] + ("pre-cj-referral",))
    purpose = data.draw(st.one_of(own, own, own, st.sampled_from(every_purpose)), label="purpose")
    endpoint = data.draw(st.sampled_from(ENDPOINTS), label="endpoint")
    if endpoint == "subjects":
        query = data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "area": st.sampled_from(["BIR", "COV", "WAL"]),
                    "cohort": st.sampled_from(["PPO", "DA", "YOUTH", "GANG"]),
                    "limit": st.integers(1, 200),
                },
            ),
            label="query",
        )
        path = f"{API}/subjects?" + "&".join(f"{k}={v}" for k, v in query.items())
    elif endpoint == "referrals":
        path = f"{API}/referrals?limit=200"
    else:
        pool = sorted(seeded.refs(f"{API}/{endpoint}s")) or ["none"]
        path = f"{API}/{endpoint}s/" + data.draw(st.sampled_from(pool), label="ref")
    response = api(agency, "get", path, purpose=purpose)
    figures.case(status=response.status_code)
    assert response.status_code < 500
    if response.status_code != 200:
        return
    body = json.loads(response.get_data())  # the bytes sent, not a re-serialisation
    records = body.get("items", [body])
    check = checker.subject if endpoint.startswith("subject") else checker.referral
    for record in records:
        check(record, agency, purpose, "list" if "items" in body else "read")
    figures.notes["records_checked"] += checker.records
