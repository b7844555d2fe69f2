"""A demo world to measure against, built exactly as tests/conftest.py builds one: migrate a
throwaway database, `load_demo`, load the agreement files, issue tokens at the real endpoint.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from bench.common import ROOT, throwaway_database
from gateway import create_app, extensions
from gateway.agreement_store import load_agreement_files
from gateway.config import Config
from gateway.demo import IssuedClient, load_demo
from gateway.migrate import upgrade
from gateway.models import Agency, Subject
from gateway.services.decisions import decide_on_subject
from gateway.services.pseudonymisation import keyring, pseudonyms_for
from gateway.services.subjects import load_subjects

TOKEN_LIFETIME = 3600  # one token lasts the whole run
# Load tests send thousands of requests a second from one client: far above the production
# default per-client limit, so it is raised (not switched off, so its bookkeeping still runs).
RATE_LIMIT = "10000000 per minute"


@dataclass
class World:
    backend: str
    url: str
    directory: Path
    app: Flask
    clients: dict[str, IssuedClient]
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, agency: str) -> str:
        """A bearer token for the agency's demo client, from the real token endpoint."""
        if agency not in self.tokens:
            demo = self.clients[agency]
            basic = base64.b64encode(f"{demo.client_id}:{demo.client_secret}".encode()).decode()
            response = self.app.test_client().post(
                "/oauth/token", data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
            )
            if response.status_code != 200:
                raise RuntimeError(f"token for {agency}: {response.status_code} "
                                   f"{response.get_data(as_text=True)[:200]}")
            self.tokens[agency] = response.get_json()["access_token"]
        return self.tokens[agency]

    def server_env(self, **extra: str) -> dict[str, str]:
        """Environment for a gunicorn serving this world (same database, same keys)."""
        return {
            **os.environ,
            "GATEWAY_DATABASE_URL": self.url,
            "GATEWAY_INSTANCE_PATH": str(self.directory / "instance"),
            "GATEWAY_KEY_DIR": str(self.directory / "keys"),
            "GATEWAY_TOKEN_LIFETIME": str(TOKEN_LIFETIME),
            "GATEWAY_RATE_LIMIT": RATE_LIMIT,
            "PYTHONPATH": str(ROOT),
            **extra,
        }

    def load_agreements(self, paths: Sequence[Path]) -> None:
        with self.app.app_context():
            session = extensions.database().session
            load_agreement_files(session, list(paths))
            session.commit()
        self.app.extensions["gateway.agreements"].forget()


def world_config(directory: Path, url: str) -> Config:
    return Config(
        env="test",
        instance_path=directory / "instance",
        database_url=url,
        key_dir=directory / "keys",
        token_lifetime_seconds=TOKEN_LIFETIME,
        audit_seal_in_process=False,
    )


@contextmanager
def demo_world(backend: str, directory: Path, *, subjects: int, seed: int = 2015
               ) -> Iterator[World]:
    """Build the demo world in a throwaway database; yields it with its app (no sealer)."""
    directory.mkdir(parents=True, exist_ok=True)
    logging.getLogger("gateway").setLevel(logging.ERROR)
    with throwaway_database(backend, directory) as url:
        upgrade(url)
        app = create_app(world_config(directory, url))
        app.config["TESTING"] = True
        app.config["GATEWAY_RATE_LIMIT"] = RATE_LIMIT
        try:
            with app.app_context():
                session = extensions.database().session
                issued = load_demo(session, seed=seed, subjects=subjects)
                session.flush()
                load_agreement_files(
                    session, sorted(app.config["GATEWAY"].agreements_dir.glob("*.yaml"))
                )
                session.commit()
            yield World(backend, url, directory, app, {c.agency: c for c in issued})
        finally:
            app.extensions["gateway.db"].dispose()


@dataclass(frozen=True)
class Read:
    """Which single-subject read to measure: the caller, its purpose and the refs it uses."""

    agency: str
    purpose: str
    level: str
    refs: tuple[str, ...]
    subject_ids: tuple[str, ...]
    why: str

    def paths(self, prefix: str = "/api/v1/subjects/") -> list[str]:
        return [prefix + ref for ref in self.refs]


def choose_read(world: World, *, count: int = 50, prefer: str = "WMP") -> Read:
    """A pseudonymised subject read if any grant allows one to any demo caller, else an
    identified read by `prefer`; `count` subjects the caller may read, in id order.

    A pseudonymised caller can only address people by the pseudonyms it was given, so those
    are computed (and indexed) the way the gateway does when it first discloses them.
    """
    now = datetime.now(UTC)
    with world.app.app_context():
        session = extensions.database().session
        policy = extensions.agreements().current()
        ids = session.scalars(sa.select(Subject.id).order_by(Subject.id)).all()
        subjects = load_subjects(session, ids)
        kinds = dict(session.execute(sa.select(Agency.code, Agency.kind)).all())
        callers = {c.agency for c in world.clients.values() if "subjects:read" in c.scopes}
        pairs = sorted(
            {(agency, purpose)
             for recipient, resource, action, purpose in policy.exact
             if resource == "subject" and action == "read"
             for agency in callers if recipient in (agency, f"kind:{kinds[agency]}")}
        )
        readable: dict[tuple[str, str, str], list[str]] = {}
        pseudonym_agreement: dict[tuple[str, str], str] = {}
        for agency, purpose in pairs:
            for subject_id in ids:
                decision = decide_on_subject(policy, agency, kinds[agency], "read", purpose,
                                             subjects[subject_id], now)
                if not decision.permitted:
                    continue
                level = "pseudonymised" if decision.pseudonym_agreement else "identified"
                readable.setdefault((agency, purpose, level), []).append(subject_id)
                if decision.pseudonym_agreement:
                    pseudonym_agreement[agency, purpose] = decision.pseudonym_agreement
        pseudonymised = sorted(k for k in readable if k[2] == "pseudonymised")
        if pseudonymised:
            agency, purpose, level = pseudonymised[0]
            chosen = readable[agency, purpose, level][:count]
            given = pseudonyms_for(session, keyring(extensions.keys()),
                                   pseudonym_agreement[agency, purpose], agency, chosen)
            session.commit()
            refs = tuple(given[s] for s in chosen)
            why = f"a grant lets {agency} read subjects pseudonymised for {purpose}"
            return Read(agency, purpose, level, refs, tuple(chosen), why)
        identified = sorted(k for k in readable if k[2] == "identified")
        if not identified:
            raise RuntimeError("no demo caller may read any subject")
        key = next((k for k in identified if k[0] == prefer), identified[0])
        chosen = readable[key][:count]
        why = ("no agreement in force lets any demo caller read a subject pseudonymised "
               f"(checked {len(pairs)} caller/purpose pairs x every subject), so: identified")
        return Read(key[0], key[1], "identified", tuple(chosen), tuple(chosen), why)


def get_each(client: FlaskClient, paths: Sequence[str], headers: dict[str, str], n: int
             ) -> list[float]:
    """The duration in microseconds of each of `n` GETs round-robin over `paths` (all 200)."""
    clock = time.perf_counter
    durations = []
    for i in range(n):
        began = clock()
        response = client.get(paths[i % len(paths)], headers=headers)
        durations.append((clock() - began) * 1e6)
        if response.status_code != 200:
            raise RuntimeError(f"GET {paths[i % len(paths)]}: {response.status_code} "
                               f"{response.get_data(as_text=True)[:300]}")
    return durations


def get_many(client: FlaskClient, paths: Sequence[str], headers: dict[str, str], n: int
             ) -> float:
    """Seconds for `n` GETs round-robin over `paths`; every one must answer 200."""
    started = time.perf_counter()
    for i in range(n):
        response = client.get(paths[i % len(paths)], headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {paths[i % len(paths)]}: {response.status_code} "
                               f"{response.get_data(as_text=True)[:300]}")
    return time.perf_counter() - started
