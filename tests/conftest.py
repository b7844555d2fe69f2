"""Shared fixtures: one database per backend per test session, one transaction per test.

The demo world (agencies, clients, subjects, agreements) is built once per backend through
the same services the app uses, then every test runs inside a transaction that is rolled
back, so tests never see each other's writes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
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


@pytest.fixture(scope="session", params=backends())
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    from gateway.agreement_store import load_agreement_files
    from gateway.demo import load_demo

    tmp = tmp_path_factory.mktemp(request.param)
    with throwaway_database(request.param, tmp) as url:
        upgrade(url)
        app = create_app(make_config(tmp, url))
        app.config["TESTING"] = True
        app.config["GATEWAY_LOG_TRACEBACKS"] = True
        with app.app_context():
            session = app.extensions["gateway.db"].session
            issued = load_demo(session, seed=2015, subjects=DEMO_SUBJECTS)
            session.flush()
            load_agreement_files(
                session, sorted(app.config["GATEWAY"].agreements_dir.glob("*.yaml"))
            )
            session.commit()
            session.remove()
        clients = {
            c.agency: DemoClient(c.client_id, c.client_secret, c.agency, c.scopes) for c in issued
        }
        yield World(app, request.param, clients, {})
        app.extensions["gateway.db"].dispose()


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
def api(client: FlaskClient, token_for):
    """api("WMP", "get", "/api/v1/subjects", purpose=...) with the agency's token."""

    def call(
        agency: str, method: str, path: str, *, purpose: str = "iom-case-management", **kwargs
    ):
        headers = {"Authorization": f"Bearer {token_for(agency)}", "X-Purpose": purpose}
        headers.update(kwargs.pop("headers", {}))
        return getattr(client, method)(path, headers=headers, **kwargs)

    return call
