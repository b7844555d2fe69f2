"""Shared pieces of the security suite (issue 8).

- Every module records its figures (cases generated, invalid cases, server errors, checks
  failed) with `figures`; they are printed together at the end of the run, `-q` or not.
- Rate limiting is switched off for these tests (they send thousands of requests through one
  client); the tests of the limits themselves switch it back on with `rate_limits`.
- `operations` walks the served OpenAPI document, so resources added later (referrals, ...)
  are covered without editing the tests.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import find
from hypothesis import strategies as st

from gateway.limits import CONFIG_LIMIT, CONFIG_TOKEN_LIMIT, EXTENSION

API = "/api/v1"

# The agencies the suite acts as, and the purposes their agreements name (all are valid
# X-Purpose values for them; the decision engine decides what each may then see).
AGENCY_PURPOSES: dict[str, tuple[str, ...]] = {
    "WMP": (
        "iom-case-management",
        "pre-cj-referral",
        "dv-perpetrator-programme",
        "performance-reporting",
    ),
    "NPS": ("iom-case-management", "caseload-sync", "performance-reporting"),
    "VSP-MENTOR": ("pre-cj-referral",),
    "IG-AUDIT": ("ig-audit",),
}
AGENCIES = tuple(AGENCY_PURPOSES)
PROBLEM = "application/problem+json"

# The JSON the gateway could return when it misbehaves: none of it may ever reach a caller.
LEAK_MARKERS = (
    "Traceback (most recent call last)",
    'File "/',
    "sqlalchemy",
    "psycopg",
    "sqlite3.",
    "Werkzeug Debugger",
    "werkzeug.debug",
    "OperationalError",
    "IntegrityError",
)


def fuzz_examples(default: int) -> int:
    """Bounded in `make test`; FUZZ_EXAMPLES=100000 for a long run."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


def stable_choice(options: tuple[str, ...], *parts: Any) -> str:
    """The same inputs choose the same option in every run (replays stay deterministic)."""
    return options[zlib.crc32(repr(parts).encode()) % len(options)]


# -- figures ------------------------------------------------------------------------------


@dataclass
class Figures:
    cases: int = 0
    invalid: int = 0
    server_errors: int = 0
    checks_failed: int = 0
    notes: Counter = field(default_factory=Counter)

    def case(self, *, invalid: bool = False, status: int | None = None) -> None:
        self.cases += 1
        self.invalid += int(invalid)
        if status is not None and status >= 500:
            self.server_errors += 1


_FIGURES: dict[str, Figures] = defaultdict(Figures)


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Figures:
    return _FIGURES[request.module.__name__.rsplit(".", 1)[-1]]


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not _FIGURES:
        return
    terminalreporter.section("security suite figures")
    header = f"{'module':34} {'cases':>8} {'invalid':>8} {'5xx':>5} {'failed':>7}  notes"
    terminalreporter.write_line(header)
    for module, f in sorted(_FIGURES.items()):
        notes = ", ".join(f"{k}={v}" for k, v in sorted(f.notes.items()))
        terminalreporter.write_line(
            f"{module:34} {f.cases:>8} {f.invalid:>8} {f.server_errors:>5} "
            f"{f.checks_failed:>7}  {notes}"
        )


# -- rate limits --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_rate_limits(request: pytest.FixtureRequest) -> Iterator[None]:
    if "world" not in request.fixturenames:
        yield
        return
    app: Flask = request.getfixturevalue("world").app
    saved = {k: app.config[k] for k in (CONFIG_LIMIT, CONFIG_TOKEN_LIMIT)}
    app.config.update({CONFIG_LIMIT: "off", CONFIG_TOKEN_LIMIT: "off"})
    try:
        yield
    finally:
        app.config.update(saved)


@pytest.fixture
def rate_limits(app: Flask, _no_rate_limits) -> Iterator[Any]:
    """rate_limits(api="3 per minute", token="2 per minute") with empty counters; restored after."""
    limiter = app.extensions[EXTENSION]

    def set_limits(*, api: str = "off", token: str = "off") -> None:
        limiter.reset()
        app.config.update({CONFIG_LIMIT: api, CONFIG_TOKEN_LIMIT: token})

    yield set_limits
    limiter.reset()


# -- the OpenAPI document -----------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict = field(hash=False, compare=False)
    root: dict = field(hash=False, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def parameters(self, location: str) -> list[dict]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == location]

    @property
    def body_schema(self) -> dict | None:
        content = self.spec.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        return resolve(self.root, schema) if schema else None


def resolve(root: dict, schema: dict) -> dict:
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


@pytest.fixture(scope="session")
def openapi(world) -> dict:
    return world.app.test_client().get(f"{API}/openapi.json").get_json()


@pytest.fixture(scope="session")
def operations(openapi) -> list[Operation]:
    found = []
    for path, item in openapi["paths"].items():
        for method, spec in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append(Operation(method, path, spec, openapi))
    assert len(found) >= 15, "the OpenAPI document lost its operations"
    return found


# -- data tables --------------------------------------------------------------------------


def data_row_counts(session) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Row count of every table except the audit log (which every request appends to)."""
    from audit.models import AuditBase
    from gateway.db import Base

    tables = [*Base.metadata.sorted_tables, *AuditBase.metadata.sorted_tables]
    return {
        t.name: session.scalar(sa.select(sa.func.count()).select_from(t))
        for t in tables
        if not t.name.startswith("audit_")
    }


# -- agencies, purposes and the resources they can see ------------------------------------


@pytest.fixture
def policy(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        return app.extensions["gateway.agreements"].current()


@pytest.fixture
def purposes_by_agency(world, policy) -> dict[str, tuple[str, ...]]:
    """Every registered demo agency and the purposes of the agreements it is party to."""
    from policies.vocabulary import BUILTIN_PURPOSES

    found = {}
    for agency in sorted(world.clients):
        named = {p.code for a in policy.agreements if agency in a.party_codes for p in a.purposes}
        found[agency] = tuple(sorted(named or BUILTIN_PURPOSES))
    return found


def list_all(
    api, agency: str, purpose: str, path: str, limit: int = 200, pages: int = 100
) -> list[dict]:  # type: ignore[no-untyped-def]
    """The items of a cursor-paginated list (up to `pages` pages), or [] when the caller may
    not list it."""
    found: list[dict] = []
    cursor = None
    for _ in range(pages):
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = api(agency, "get", path + query, purpose=purpose)
        if response.status_code != 200:
            return found
        body = response.get_json()
        found.extend(body.get("items", []))
        cursor = body.get("next_cursor")
        if not cursor:
            return found
    if pages < 100:
        return found
    raise AssertionError(f"{path} never stopped paginating")


def minimal_instance(schema: dict, root: dict, overrides: dict[str, Any], name: str = "") -> Any:
    """The smallest value a JSON schema accepts, with named fields taken from `overrides`."""
    if name in overrides:
        return overrides[name]
    schema = resolve(root, schema)
    for combinator in ("allOf", "anyOf", "oneOf"):
        if combinator in schema:
            return minimal_instance(schema[combinator][0], root, overrides, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            key: minimal_instance(properties[key], root, overrides, key)
            for key in schema.get("required", [])
        }
    if kind == "array":
        item = minimal_instance(schema.get("items", {}), root, overrides, name)
        return [item] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "number":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    if schema.get("format") == "date":
        return "2026-01-01"
    if "pattern" in schema:
        return _simplest_match(schema["pattern"])
    return "x" * max(3, schema.get("minLength", 0))


@functools.cache
def _simplest_match(pattern: str) -> str:
    """The simplest string a pattern accepts (hypothesis shrinks to it: deterministic)."""
    return find(st.from_regex(pattern, fullmatch=True), lambda _: True)


def is_collection(operation: Operation) -> bool:
    return "{" not in operation.path


def item_operation(operations: list[Operation], collection: str) -> Operation | None:
    """GET /things/{id} for the collection /things, if the API has one."""
    for operation in operations:
        if (
            operation.method == "get"
            and operation.path.startswith(collection + "/{")
            and operation.path.count("{") == 1
            and operation.path.endswith("}")
        ):
            return operation
    return None


@dataclass
class Seeded:
    """What each (agency, purpose) can list, per collection, after creating a few resources."""

    visible: dict[tuple[str, str, str], list[dict]]
    created: dict[str, list[tuple[str, str, str]]]  # collection -> [(ref, creator, purpose)]
    bodies: dict[str, tuple[str, str, dict]] = field(default_factory=dict)  # first that worked

    def refs(self, collection: str) -> set[str]:
        return {
            item_ref(i)
            for (_, _, c), items in self.visible.items()
            if c == collection
            for i in items
        }


def item_ref(item: dict) -> str:
    """How a list item names itself (what the item operation's path parameter takes)."""
    return str(next(item[k] for k in ("ref", "id", "seq") if k in item))


@dataclass
class _Recipe:
    """What seeding found once per backend: the listings of collections nothing was created
    in (demo data, identical in every test) and the create requests that worked."""

    visible: dict[tuple[str, str, str], list[dict]]
    creations: list[tuple[str, str, str, dict]]  # (path, creator, purpose, body)
    relist: list[str]


_RECIPES: dict[tuple[str, bool], _Recipe] = {}


def seed(api, world, operations, purposes_by_agency, policy, *, full: bool) -> Seeded:  # type: ignore[no-untyped-def]
    """List every collection that has an item operation (first page of 50) as every agency
    and purpose; create objects through every create operation the API documents (POST on a
    collection answering 201) as each pair of parties to an agreement, for its purposes; list
    those collections again. `full=False`: one lister per agency and collection, one object
    per create operation (enough for real paths and bodies).

    The discovery runs once per backend; later tests (each in its own rolled-back
    transaction) replay the create requests that worked and list only what they changed."""
    collections = [
        o.path
        for o in operations
        if o.method == "get" and is_collection(o) and item_operation(operations, o.path)
    ]
    visible: dict[tuple[str, str, str], list[dict]] = {}

    def list_everything(paths: list[str]) -> None:
        for path in paths:
            for agency, purposes in purposes_by_agency.items():
                for purpose in purposes:
                    items = list_all(api, agency, purpose, path, limit=50 if full else 5, pages=1)
                    visible[agency, purpose, path] = items
                    if items and not full:
                        break  # one purpose's first few objects per agency will do

    created: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    bodies: dict[str, tuple[str, str, dict]] = {}

    def create(path: str, creator: str, purpose: str, body: dict) -> bool:
        response = api(creator, "post", path, purpose=purpose, json=body)
        assert response.status_code < 500, response.get_json()
        if response.status_code != 201:
            return False
        created[path].append((response.get_json()["ref"], creator, purpose))
        bodies.setdefault(path, (creator, purpose, body))
        return True

    recipe = _RECIPES.get((world.backend, full))
    if recipe is not None:
        for path, creator, purpose, body in recipe.creations:
            assert create(path, creator, purpose, body), f"replaying POST {path} failed"
        visible.update(recipe.visible)
        list_everything(recipe.relist)
        return Seeded(visible, dict(created), bodies)

    list_everything(collections)
    subjects: dict[str, list[str]] = defaultdict(list)
    for (agency, _purpose, path), items in sorted(visible.items()):
        if path == f"{API}/subjects":
            subjects[agency].extend(i["ref"] for i in items if i["ref"] not in subjects[agency])
    creators = [
        o
        for o in operations
        if o.method == "post"
        and is_collection(o)
        and "201" in o.spec["responses"]
        and o.body_schema is not None
    ]
    creations = []
    for operation in creators:
        for agreement in policy.agreements:
            for purpose in (p.code for p in agreement.purposes):
                for creator in sorted(agreement.party_codes & set(subjects)):
                    for recipient in sorted(agreement.party_codes - {creator}):
                        for subject in subjects[creator][:2]:
                            if not full and created.get(operation.path):
                                break
                            body = minimal_instance(
                                operation.body_schema,
                                operation.root,
                                {"subject_ref": subject, "to_agency": recipient},
                            )
                            if create(operation.path, creator, purpose, body):
                                creations.append((operation.path, creator, purpose, body))
    again = [c for c in collections if c in created or c.endswith("/events")]
    for key in [k for k in visible if k[2] in again]:
        del visible[key]
    _RECIPES[world.backend, full] = _Recipe(dict(visible), creations, again)
    list_everything(again)
    return Seeded(visible, dict(created), bodies)


@pytest.fixture
def seeded(api, world, operations, purposes_by_agency, policy) -> Seeded:  # type: ignore[no-untyped-def]
    """Every agency's view of every collection, after creating objects every way it can."""
    return seed(api, world, operations, purposes_by_agency, policy, full=True)


@pytest.fixture
def known(api, world, operations, purposes_by_agency, policy) -> Seeded:  # type: ignore[no-untyped-def]
    """A few real objects of every collection: for real paths and bodies."""
    return seed(api, world, operations, purposes_by_agency, policy, full=False)


def concrete_path(template: str, seeded: Seeded | None = None, fallback: str = "0") -> str:
    """A real path for a template: each {param} filled with an object of the collection it
    follows when one was listed (seeded), else a subject id for {subject}, else `fallback`."""
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        name, collection = path[start + 1 : end], path[: start - 1]
        refs = sorted(seeded.refs(collection) - {"None"}) if seeded else []
        if not refs and seeded and name == "subject":
            refs = sorted(r for r in seeded.refs(f"{API}/subjects") if len(r) == 36)
        value = refs[0] if refs else PATH_DEFAULTS.get(name, fallback)
        path = path[:start] + value + path[end + 1 :]
    return path


PATH_DEFAULTS = {"transition": "accept", "agreement_id": "core-iom"}


def caller_for(api, operation, purposes_by_agency, seeded=None) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """An agency and purpose that get past authentication and scope for this operation: one
    that gets a 2xx if any does, else one that at least sees the object (409, 412, 428...)."""
    body = (
        minimal_instance(operation.body_schema, operation.root, {})
        if operation.body_schema
        else None
    )
    path = concrete_path(operation.path, seeded)
    ranked: dict[int, tuple[str, str]] = {}
    for agency, purposes in purposes_by_agency.items():
        for purpose in purposes:
            status = api(agency, operation.method, path, purpose=purpose, json=body).status_code
            if status < 300:
                return agency, purpose
            if status not in (401, 403):
                ranked.setdefault(1 if status == 404 else 0, (agency, purpose))
    if not ranked:
        pytest.fail(f"no agency may call {operation.label}")
    return ranked[min(ranked)]
