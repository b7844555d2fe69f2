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


# --- in-process (CliRunner) on the test's app and transaction -----------------------------
@pytest.fixture
def run(app, db, monkeypatch):
    """run("clients", "add", ...) -> click Result, on the test's app and transaction."""
    from click.testing import CliRunner

    import gateway.cli

    monkeypatch.setattr(gateway.cli, "_app", lambda: app)
    runner = CliRunner()
    return lambda *args: runner.invoke(gateway.cli.main, list(args))


def rows(db, model) -> int:
    return db.scalar(sa.select(sa.func.count()).select_from(model))


def test_loading_a_retired_agreement_says_it_stays_retired_and_exits_1(run, db, tmp_path):
    """Loading the file of a retired version again must not look like putting it back in force
    (exit 0, "unchanged"): it stays retired, and a new version is the way back."""
    from gateway.models import AgreementVersion

    assert run("agreements", "retire", "pre-cj-referral").exit_code == 0
    again = run("agreements", "load")  # the whole directory, as after any edit
    assert again.exit_code == 1, again.output
    lines = again.stdout.splitlines()
    retired = next(line for line in lines if line.startswith("pre-cj-referral@"))
    assert "retired, not put back in force" in retired and "load it as version" in retired
    assert all(line.endswith(": unchanged") for line in lines if line != retired)
    assert "retired and stay out of force" in again.stderr
    unretired = sa.select(AgreementVersion).where(
        AgreementVersion.agreement_id == "pre-cj-referral", AgreementVersion.retired_at.is_(None)
    )
    assert db.scalars(unretired).all() == []

    newest = max(
        db.scalars(
            sa.select(AgreementVersion.version).where(
                AgreementVersion.agreement_id == "pre-cj-referral"
            )
        )
    )
    source = ROOT / "policies" / "agreements" / "pre-cj-referral.yaml"
    text = source.read_text()
    current = next(line for line in text.splitlines() if line.startswith("version:"))
    bumped = tmp_path / "pre-cj-referral.yaml"
    bumped.write_text(text.replace(current, f"version: {newest + 1}", 1))
    reinstated = run("agreements", "load", str(bumped))
    assert reinstated.exit_code == 0, reinstated.output
    assert reinstated.stdout.strip() == f"pre-cj-referral@{newest + 1}: loaded"
    assert len(db.scalars(unretired).all()) == 1


def _jwks_cases() -> dict[str, str]:
    import warnings

    from joserfc.jwk import ECKey, OctKey, RSAKey

    with warnings.catch_warnings():  # joserfc warns about the short key we mean to refuse
        warnings.simplefilter("ignore")
        short_rsa = RSAKey.generate_key(1024, private=False).as_dict()

    return {
        "a JSON list": "[1, 2]",
        "not JSON": "{not json",
        "no keys": '{"keys": []}',
        "a private key": json.dumps({"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}),
        "a shared secret": json.dumps({"keys": [OctKey.generate_key(256).as_dict(private=True)]}),
        "an encryption key": json.dumps(
            {"keys": [ECKey.generate_key("P-256", {"use": "enc"}, private=False).as_dict()]}
        ),
        "a 1024-bit RSA key": json.dumps({"keys": [short_rsa]}),
    }


@pytest.mark.parametrize("case", sorted(_jwks_cases()))
def test_clients_add_refuses_a_jwks_no_assertion_could_verify_in_one_line(run, db, tmp_path, case):
    from audit.models import AuditEventRow
    from gateway.models import ApiClient

    path = tmp_path / "keys.json"
    path.write_text(_jwks_cases()[case])
    before = rows(db, ApiClient), rows(db, AuditEventRow)
    result = run(
        "clients", "add", "VSP-MENTOR", "--name", "x", "--scope", "agreements:read",
        "--jwks", str(path),
    )  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert (rows(db, ApiClient), rows(db, AuditEventRow)) == before


def test_clients_add_registers_a_public_jwks_for_private_key_jwt(run, db, tmp_path):
    from joserfc.jwk import ECKey

    from gateway.models import ApiClient

    public = ECKey.generate_key("P-256", parameters={"kid": "k1"}).as_dict(private=False)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [public]}))
    result = run(
        "clients", "add", "VSP-MENTOR", "--name", "x", "--scope", "agreements:read",
        "--jwks", str(path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client_id = result.stdout.split()[1]
    stored = db.scalar(sa.select(ApiClient).where(ApiClient.client_id == client_id))
    assert stored.auth_method == "private_key_jwt" and stored.secret_hash is None
    assert "client_secret" not in result.stdout
