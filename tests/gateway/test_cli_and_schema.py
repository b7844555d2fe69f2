"""The administrator's CLI and the migrations, on a fresh database of each backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from audit.models import AuditBase
from gateway.db import Base
from gateway.migrate import upgrade
from tests.databases import backends, throwaway_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", backends())
def test_migrations_match_the_models(backend, tmp_path):
    with throwaway_database(backend, tmp_path) as url:
        upgrade(url)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, [Base.metadata, AuditBase.metadata])
        engine.dispose()
    assert diff == []


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("backend", backends())
def test_cli_administers_agencies_clients_agreements_and_audit(backend, tmp_path):
    with throwaway_database(backend, tmp_path) as url:
        env = {
            **os.environ,
            "GATEWAY_DATABASE_URL": url,
            "GATEWAY_INSTANCE_PATH": str(tmp_path / "inst"),
            "GATEWAY_KEY_DIR": str(tmp_path / "keys"),
            "PYTHONPATH": str(ROOT),
        }
        assert cli(env, "db", "upgrade").returncode == 0
        loaded = cli(env, "demo", "load", "--subjects", "40")
        assert loaded.returncode == 0, loaded.stderr
        creds = json.loads((tmp_path / "inst" / "demo-credentials.json").read_text())
        assert {c["agency"] for c in creds} >= {"WMP", "NPS", "CRC", "IG-AUDIT"}
        assert oct((tmp_path / "inst" / "demo-credentials.json").stat().st_mode)[-3:] == "600"
        assert cli(env, "demo", "load").stdout.strip() == "demo data already loaded"

        assert "WMP" in cli(env, "agencies", "list").stdout
        added = cli(
            env, "clients", "add", "WMP", "--name", "second system", "--scope", "subjects:read"
        )
        assert "client_secret:" in added.stdout
        bad = cli(env, "clients", "add", "WMP", "--name", "x", "--scope", "everything")
        assert bad.returncode == 1 and "unknown scopes" in bad.stderr
        client_id = added.stdout.split()[1]
        assert cli(env, "clients", "revoke", client_id).returncode == 0
        assert cli(env, "agencies", "suspend", "VSP-HOUSING").returncode == 0
        assert "SUSPENDED" in cli(env, "agencies", "list").stdout

        listing = cli(env, "agreements", "list").stdout
        assert "core-iom@3" in listing
        explained = cli(
            env,
            "agreements",
            "explain",
            "--agency",
            "VSP-MENTOR",
            "--purpose",
            "iom-case-management",
            "--action",
            "read",
            "--resource",
            "subject",
        )
        assert explained.returncode == 0 and "deny" in explained.stdout.lower()
        bad_file = tmp_path / "bad.yaml"
        bad_file.write_text("id: x\nversion: one\n")
        checked = cli(env, "agreements", "check", str(bad_file))
        assert checked.returncode == 1 and "bad.yaml:2" in checked.stdout

        assert cli(env, "agreements", "retire", "legacy-probation-trust").returncode == 0
        assert "legacy-probation-trust" not in cli(env, "agreements", "list").stdout
        assert cli(env, "agreements", "retire", "no-such").returncode == 1

        assert cli(env, "keys", "rotate").returncode == 0
        assert "sealed" in cli(env, "audit", "seal", "--once").stdout
        verified = cli(env, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_production_refuses_demo_keys(tmp_path):
    env = {
        **os.environ,
        "GATEWAY_ENV": "production",
        "GATEWAY_KEY_DIR": str(tmp_path / "none"),
        "GATEWAY_INSTANCE_PATH": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("iom-gateway: cannot start:")
