"""Shared fixtures: one database per backend per test session, one transaction per test.

The demo world (agencies, clients, subjects, agreements) is built once per backend through
the same services the app uses, then every test runs inside a transaction that is rolled
back, so tests never see each other's writes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from gateway import create_app
from gateway.config import Config
from gateway.migrate import upgrade
from tests.databases import backends, throwaway_database

DEMO_SUBJECTS = 150


@dataclass(frozen=True)
class DemoClient:
    client_id: str
    client_secret: str
    agency: str
    scopes: tuple[str, ...]

    @property
    def basic_auth(self) -> dict[str, str]:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@dataclass
class World:
    app: Flask
    backend: str
    clients: dict[str, DemoClient]
    tokens: dict[str, str]


def make_config(tmp: Path, database_url: str, **overrides) -> Config:
    return Config(
        env="test",
        instance_path=tmp / "instance",
        database_url=database_url,
        key_dir=tmp / "keys",
        token_lifetime_seconds=3600,
        audit_seal_in_process=False,
        **overrides,
    )


def build_world(backend: str, tmp: Path, url: str, subjects: int = DEMO_SUBJECTS) -> World:
    """Migrate the database at `url`, load the demo world and agreements into it (committed)
    and make the app that serves it."""
    from gateway.agreement_store import load_agreement_files
    from gateway.demo import load_demo

    upgrade(url)
    app = create_app(make_config(tmp, url))
    app.config["TESTING"] = True
    app.config["GATEWAY_LOG_TRACEBACKS"] = True
    with app.app_context():
        session = app.extensions["gateway.db"].session
        issued = load_demo(session, seed=2015, subjects=subjects)
        session.flush()
        load_agreement_files(session, sorted(app.config["GATEWAY"].agreements_dir.glob("*.yaml")))
        session.commit()
        session.remove()
    clients = {
        c.agency: DemoClient(c.client_id, c.client_secret, c.agency, c.scopes) for c in issued
    }
    return World(app, backend, clients, {})


@pytest.fixture(scope="session", params=backends())
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(request.param)
    with throwaway_database(request.param, tmp) as url:
        world = build_world(request.param, tmp, url)
        yield world
        world.app.extensions["gateway.db"].dispose()


@pytest.fixture
def app(world: World) -> Iterator[Flask]:
    """The app with its session bound to a transaction rolled back after the test."""
    database = world.app.extensions["gateway.db"]
    connection = database.engine.connect()
    outer = connection.begin()
    database.session.remove()
    database.session.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield world.app
    finally:
        database.session.remove()
        outer.rollback()
        connection.close()
        database.session.configure(
            bind=database.engine, join_transaction_mode="conditional_savepoint"
        )
        world.app.extensions["gateway.agreements"].forget()  # a test may have loaded agreements


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def db(app: Flask) -> Iterator[Session]:
    with app.app_context():
        yield app.extensions["gateway.db"].session


@pytest.fixture
def token_for(world: World, app: Flask):
    """token_for("WMP") -> a bearer token from the real token endpoint (cached per session)."""

    def issue(agency: str) -> str:
        if agency not in world.tokens:
            demo = world.clients[agency]
            response = app.test_client().post(
                "/oauth/token", data={"grant_type": "client_credentials"}, headers=demo.basic_auth
            )
            assert response.status_code == 200, response.get_json()
            world.tokens[agency] = response.get_json()["access_token"]
        return world.tokens[agency]

    return issue


@pytest.fixture
def load_agreement(app: Flask, db: Session, tmp_path: Path):
    """load_agreement(yaml_text): store that agreement version, in the test's transaction,
    and put it in force, as `iom-gateway agreements load` does."""
    from gateway.agreement_store import load_agreement_files

    def load(text: str) -> None:
        agreement_id = re.search(r"^id: (\S+)", text, re.MULTILINE)[1]
        path = tmp_path / f"{agreement_id}.yaml"
        path.write_text(text)
        load_agreement_files(db, [path])
        db.commit()
        app.extensions["gateway.agreements"].forget()

    return load


@pytest.fixture
def expire_agreement(app: Flask, load_agreement):
    """expire_agreement("core-iom"): a next version of that demo agreement, ended yesterday,
    is the one in force (so nothing it grants is permitted any more)."""

    def expire(agreement_id: str) -> None:
        text = (app.config["GATEWAY"].agreements_dir / f"{agreement_id}.yaml").read_text()
        version = int(re.search(r"^version: (\d+)$", text, re.MULTILINE)[1])
        yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
        for field, value in (
            ("version", version + 1), ("valid_until", yesterday), ("review_by", yesterday)
        ):
            text = re.sub(rf"^{field}: .*$", f"{field}: {value}", text, count=1, flags=re.MULTILINE)
        load_agreement(text)

    return expire


@pytest.fixture
def api(client: FlaskClient, token_for):
    """api("WMP", "get", "/api/v1/subjects", purpose=...) with the agency's token."""

    def call(
        agency: str, method: str, path: str, *, purpose: str = "iom-case-management", **kwargs
    ):
        headers = {"Authorization": f"Bearer {token_for(agency)}", "X-Purpose": purpose}
        headers.update(kwargs.pop("headers", {}))
        return getattr(client, method)(path, headers=headers, **kwargs)

    return call
