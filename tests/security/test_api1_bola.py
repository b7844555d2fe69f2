"""OWASP API1:2023 Broken Object Level Authorization.

Every agency, under every purpose it can declare, asks for every other agency's objects by
their references: subjects (internal ids and the pseudonyms other recipients were given),
referrals created through the API, agreements, audit events, and whatever collections the
OpenAPI document gains later. The resources are discovered from the document (a GET on a
collection with a GET /collection/{id} beside it), created through its create operations,
and listed as every agency.

An object comes back (200) only if the decision engine lets that agency see it for that
purpose; anything else is answered exactly like an object that does not exist, byte for byte
apart from the request id. Writes on another agency's object change nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from gateway.db import Base
from gateway.models import Agency, CaseloadSnapshot, Referral
from gateway.services.decisions import decide_on_subject
from gateway.services.pseudonymisation import resolve_pseudonym
from gateway.services.referral_disclosure import decide_on_referral
from gateway.services.subjects import load_subjects
from tests.security.conftest import (
    API,
    data_row_counts,
    item_operation,
    item_ref,
    minimal_instance,
    stable_choice,
)

PER_OWNER = 4  # references sampled from what each agency can list
UNLISTED = 3  # plus references nobody listed, straight from the table
PATH_VALUES = {"transition": ("accept", "withdraw", "decline", "engage", "complete")}
WRITE_TARGETS = 3  # created objects attacked with every write operation


def comparable(response) -> tuple:  # type: ignore[no-untyped-def]
    body = response.get_json(silent=True)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "request_id"}
    headers = {
        k: v
        for k, v in response.headers.items()
        if k not in ("X-Request-ID", "Content-Length", "ETag")
    }
    return response.status_code, body, headers


def nonexistent_like(ref: str) -> str:
    if len(ref) == 36:
        return str(uuid.uuid4())
    if ref.isdigit():
        return str(2**40 + int(ref))
    if ref.startswith("psn"):
        return ref[:-6] + "aaaaaa"
    return ref + "-nosuch"


class Oracle:
    """May `agency` see the object `ref` of `collection` for `purpose`? From the engine."""

    def __init__(self, db, app, policy, seeded) -> None:  # type: ignore[no-untyped-def]
        self.db, self.app, self.policy, self.seeded = db, app, policy, seeded
        self.now = datetime.now(UTC)
        self.agencies = {a.code: a for a in db.scalars(sa.select(Agency))}
        self.unknown: set[str] = set()

    def permits(self, collection: str, agency: str, purpose: str, ref: str) -> bool:
        resource = collection.rsplit("/", 1)[-1]
        check = getattr(self, f"_{resource}", None)
        if check is None:
            # No dedicated oracle yet: it may see what it can list for this purpose.
            self.unknown.add(collection)
            listed = self.seeded.visible.get((agency, purpose, collection), [])
            return ref in {item_ref(i) for i in listed}
        return check(agency, purpose, ref)

    def _subjects(self, agency: str, purpose: str, ref: str) -> bool:
        subject_id, by_pseudonym = ref, ref.startswith("psn")
        if by_pseudonym:
            grace = timedelta(days=self.app.config["GATEWAY"].pseudonym_grace_days)
            resolved = resolve_pseudonym(self.db, ref, agency, grace, self.now)
            if resolved is None:
                return False
            subject_id = resolved[0]
        subject = load_subjects(self.db, [subject_id]).get(subject_id)
        if subject is None:
            return False
        a = self.agencies[agency]
        decision = decide_on_subject(
            self.policy, a.code, a.kind, "read", purpose, subject, self.now
        )
        return decision.permitted and by_pseudonym == bool(decision.pseudonym_agreement)

    def _referrals(self, agency: str, purpose: str, ref: str) -> bool:
        referral = self.db.get(Referral, ref)
        if referral is None:
            return False
        decision = decide_on_referral(
            self.policy, self.agencies[agency], "read", purpose, referral, self.now
        )
        return decision.permitted

    def outcomes(self, agency: str, purpose: str, ref: str) -> bool:
        """Outcomes follow their own grants: a party, or an agency managing the person."""
        referral = self.db.get(Referral, ref)
        if referral is None:
            return False
        decision = decide_on_referral(
            self.policy,
            self.agencies[agency],
            "list",
            purpose,
            referral,
            self.now,
            resource="outcome",
        )
        return decision.permitted

    def _agreements(self, agency: str, purpose: str, ref: str) -> bool:
        return any(a.id == ref and agency in a.party_codes for a in self.policy.agreements)

    def _events(self, agency: str, purpose: str, ref: str) -> bool:
        return self.agencies[agency].kind == "ig_audit"

    def _snapshots(self, agency: str, purpose: str, ref: str) -> bool:
        """A caseload snapshot is its own agency's (it holds no one else's data)."""
        snapshot = self.db.get(CaseloadSnapshot, ref)
        return snapshot is not None and snapshot.agency_id == self.agencies[agency].id


def sample_refs(seeded, db, collection: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Refs each agency listed (a few per agency) and a few from the table nobody listed."""
    by_owner: dict[str, set[str]] = defaultdict(set)
    for (agency, _purpose, c), items in seeded.visible.items():
        if c == collection:
            by_owner[agency] |= {item_ref(i) for i in items} - {"None"}  # unsealed events
    chosen: list[str] = []
    for agency in sorted(by_owner):
        ordered = sorted(by_owner[agency], key=lambda r: stable_choice((r,), agency, r) + r)
        chosen.extend(r for r in ordered[:PER_OWNER] if r not in chosen)
    if collection.endswith("/subjects"):  # and the pseudonyms recipients were given, anywhere
        for _key, items in sorted(seeded.visible.items()):
            given = sorted(set(pseudonyms_in(items)))[:PER_OWNER]
            chosen.extend(r for r in given if r not in chosen)
    table = Base.metadata.tables.get(collection.rsplit("/", 1)[-1])
    if table is not None and len(table.primary_key.columns) == 1:
        column = next(iter(table.primary_key.columns))
        unlisted = db.scalars(
            sa.select(column).where(column.not_in(seeded.refs(collection))).limit(UNLISTED)
        )
        chosen.extend(str(v) for v in unlisted)
    return chosen


def pseudonyms_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("psn") else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in pseudonyms_in(v)]
    if isinstance(value, list):
        return [p for v in value for p in pseudonyms_in(v)]
    return []


def test_objects_are_released_only_under_an_agreement(
    api, app, db, operations, seeded, purposes_by_agency, policy, figures
):
    oracle = Oracle(db, app, policy, seeded)
    collections = sorted({c for (_, _, c) in seeded.visible})
    assert f"{API}/subjects" in collections
    released = 0
    for collection in collections:
        item = item_operation(operations, collection)
        refs = sample_refs(seeded, db, collection)
        figures.notes[collection.rsplit("/", 1)[-1]] = len(refs)
        for agency, purposes in purposes_by_agency.items():
            for purpose in purposes:
                baselines: dict[int, tuple] = {}
                for ref in refs:
                    response = api(agency, "get", fill_path(item.path, ref), purpose=purpose)
                    figures.case(status=response.status_code)
                    assert response.status_code < 500, (collection, agency, ref)
                    if response.status_code == 200:
                        released += 1
                        assert oracle.permits(collection, agency, purpose, ref), (
                            f"{agency} ({purpose}) was given {collection}/{ref}"
                        )
                        assert item_ref(response.get_json()) == ref
                        continue
                    shape = len(ref)
                    if shape not in baselines:
                        elsewhere = fill_path(item.path, nonexistent_like(ref))
                        missing = api(agency, "get", elsewhere, purpose=purpose)
                        baselines[shape] = comparable(missing)
                    assert comparable(response) == baselines[shape], (
                        f"{agency} ({purpose}) can tell {collection}/{ref} exists"
                    )
    assert released, "no agency could read anything: the test would prove nothing"
    assert any(r.startswith("psn") for r in sample_refs(seeded, db, f"{API}/subjects"))
    figures.notes["released"] += released
    figures.notes["collections_without_oracle"] = len(oracle.unknown)


def test_nested_reads_follow_the_parent_object(
    api, app, db, operations, seeded, purposes_by_agency, policy, figures
):
    """GET /things/{id}/more: only for an agency that may see the thing."""
    oracle = Oracle(db, app, policy, seeded)
    for collection, created in seeded.created.items():
        nested = [
            o
            for o in operations
            if o.method == "get" and o.path.startswith(collection + "/{") and o.path.count("/") > 4
        ]
        for operation in nested:
            for ref, _creator, _ in created:
                for agency, purposes in purposes_by_agency.items():
                    for purpose in purposes:
                        path = fill_path(operation.path, ref)
                        response = api(agency, "get", path, purpose=purpose)
                        figures.case(status=response.status_code)
                        assert response.status_code < 500
                        if response.status_code == 200 and path.endswith("/outcomes"):
                            assert oracle.outcomes(agency, purpose, ref), path
                        elif response.status_code == 200:
                            assert oracle.permits(collection, agency, purpose, ref), path
                        else:
                            elsewhere = fill_path(operation.path, str(uuid.uuid4()))
                            missing = api(agency, "get", elsewhere, purpose=purpose)
                            assert comparable(response) == comparable(missing), (agency, path)


def fill_path(template: str, ref: str, choice: int = 0) -> str:
    """The object's ref in the first parameter; others from PATH_VALUES (else a plain word)."""
    path, first = template, True
    while "{" in path:
        name = path[path.index("{") + 1 : path.index("}")]
        options = PATH_VALUES.get(name, ("x",))
        path = path.replace("{" + name + "}", ref if first else options[choice % len(options)], 1)
        first = False
    return path


def test_writes_on_another_agencys_object_change_nothing(
    api, db, operations, seeded, purposes_by_agency, figures
):
    """Every POST on an object (transitions, consent, outcomes) by every agency that is not a
    party, under the object's own purpose and holding its current ETag: answered like a write
    on no object, and nothing changes."""
    assert seeded.created, "the API created nothing to attack: seeding is broken"
    for collection, created in seeded.created.items():
        item = item_operation(operations, collection)
        writes = [
            o
            for o in operations
            if o.method in ("post", "put", "patch", "delete")
            and o.path.startswith(collection + "/{")
        ]
        for ref, creator, purpose in created[:WRITE_TARGETS]:
            owner_view = api(creator, "get", fill_path(item.path, ref), purpose=purpose)
            assert owner_view.status_code == 200
            etag = owner_view.headers.get("ETag", '"0"')
            parties = parties_of(db, collection, ref, creator)
            before = data_row_counts(db)
            for operation in writes:
                body: Any = (
                    minimal_instance(operation.body_schema, operation.root, {})
                    if operation.body_schema
                    else None
                )
                rounds = len(PATH_VALUES["transition"]) if operation.path.count("{") > 1 else 1
                for choice in range(rounds):
                    for agency in sorted(set(purposes_by_agency) - parties):
                        attempt = dict(purpose=purpose, json=body, headers={"If-Match": etag})
                        path = fill_path(operation.path, ref, choice)
                        response = api(agency, operation.method, path, **attempt)
                        figures.case(status=response.status_code)
                        elsewhere = fill_path(operation.path, str(uuid.uuid4()), choice)
                        missing = api(agency, operation.method, elsewhere, **attempt)
                        assert comparable(response) == comparable(missing), (agency, path)
            assert data_row_counts(db) == before
            again = api(creator, "get", fill_path(item.path, ref), purpose=purpose)
            assert again.headers.get("ETag") == owner_view.headers.get("ETag")
            assert again.get_json() == owner_view.get_json()


def parties_of(db, collection: str, ref: str, creator: str) -> set[str]:  # type: ignore[no-untyped-def]
    if collection.endswith("/referrals"):
        referral = db.get(Referral, ref)
        agencies = {a.id: a.code for a in db.scalars(sa.select(Agency))}
        return {agencies[referral.from_agency_id], agencies[referral.to_agency_id]}
    return {creator}
