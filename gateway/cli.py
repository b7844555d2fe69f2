"""`iom-gateway`: the administrator's command line.

Every command works on the configured database (GATEWAY_DATABASE_URL) and writes its
administrative changes to the audit log, like the API does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from gateway import extensions
from gateway.config import Config


def _app() -> Flask:
    from gateway.app import create_app

    return create_app(replace(Config.from_env(), audit_seal_in_process=False))


@contextmanager
def session_scope() -> Iterator[tuple[Flask, Session]]:
    """An app context and a session committed on success, rolled back on error."""
    app = _app()
    with app.app_context():
        session = extensions.database().session
        try:
            yield app, session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """Administer the IOM partner gateway."""


# --- database ---------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    from gateway.migrate import upgrade

    config = Config.from_env()
    if config.database_url.startswith("sqlite:///"):
        Path(config.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    upgrade(config.database_url)
    click.echo("database is at the latest schema version")


# --- agencies and clients ---------------------------------------------------------------
@main.group()
def agencies() -> None:
    """Partner agencies."""


@agencies.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--kind", required=True)
@click.option("--area", "areas", multiple=True, help="Area code served (repeatable)")
def agencies_add(code: str, name: str, kind: str, areas: tuple[str, ...]) -> None:
    from gateway.services.registry import RegistryError, add_agency

    with session_scope() as (_, session):
        try:
            add_agency(session, code, name, kind, list(areas))
        except RegistryError as error:
            fail(str(error))
    click.echo(f"agency {code} registered")


@agencies.command("list")
def agencies_list() -> None:
    from gateway.models import Agency

    with session_scope() as (_, session):
        for agency in session.scalars(sa.select(Agency).order_by(Agency.code)):
            state = "SUSPENDED" if agency.suspended_at else "active"
            click.echo(f"{agency.code:<12} {agency.kind:<16} {state:<10} {agency.name}")


@agencies.command("suspend")
@click.argument("code")
def agencies_suspend(code: str) -> None:
    """Refuse every request of the agency from now on, whatever tokens it holds."""
    from gateway.services.registry import RegistryError, set_agency_suspended

    with session_scope() as (_, session):
        try:
            set_agency_suspended(session, code, True)
        except RegistryError as error:
            fail(str(error))
    click.echo(f"agency {code} suspended")


@agencies.command("reinstate")
@click.argument("code")
def agencies_reinstate(code: str) -> None:
    from gateway.services.registry import RegistryError, set_agency_suspended

    with session_scope() as (_, session):
        try:
            set_agency_suspended(session, code, False)
        except RegistryError as error:
            fail(str(error))
    click.echo(f"agency {code} reinstated")


@main.group()
def clients() -> None:
    """API clients of the agencies."""


@clients.command("add")
@click.argument("agency")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True)
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Register public keys for private_key_jwt instead of issuing a secret",
)
def clients_add(agency: str, name: str, scopes: tuple[str, ...], jwks_file: Path | None) -> None:
    from gateway.services.registry import RegistryError, add_client

    jwks = _read_jwks(jwks_file) if jwks_file else None
    with session_scope() as (_, session):
        try:
            issued = add_client(session, agency, name, list(scopes), jwks=jwks)
        except RegistryError as error:
            fail(str(error))
    click.echo(f"client_id:     {issued.client_id}")
    if issued.client_secret:
        click.echo(f"client_secret: {issued.client_secret}   (shown once; stored only as a hash)")


def _read_jwks(path: Path) -> Any:
    """The file's JSON, or exit 1 in one line (add_client checks what the JSON holds)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        fail(f"{path} is not a JSON file: {error}")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")


@clients.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    from gateway.services.registry import RegistryError, revoke_client

    with session_scope() as (_, session):
        try:
            revoke_client(session, client_id)
        except RegistryError as error:
            fail(str(error))
    click.echo(f"client {client_id} revoked")


# --- demo -------------------------------------------------------------------------------
@main.group()
def demo() -> None:
    """Synthetic West Midlands demo data."""


@demo.command("load")
@click.option("--seed", default=2015, show_default=True)
@click.option("--subjects", default=2000, show_default=True)
def demo_load(seed: int, subjects: int) -> None:
    """Load demo agencies, clients, subjects and agreements (once)."""
    from gateway.agreement_store import load_agreement_files
    from gateway.demo import DemoAlreadyLoaded, load_demo, write_credentials

    with session_scope() as (app, session):
        try:
            clients = load_demo(session, seed=seed, subjects=subjects)
        except DemoAlreadyLoaded:
            click.echo("demo data already loaded")
            return
        session.flush()
        load_agreement_files(
            session, sorted(Path(extensions.config().agreements_dir).glob("*.yaml"))
        )
        path = Path(app.instance_path) / "demo-credentials.json"
        write_credentials(path, clients)
    click.echo(f"demo data loaded ({subjects} subjects); credentials in {path}")


@demo.command("credentials")
def demo_credentials() -> None:
    """Print the demo API clients' credentials."""
    from gateway.demo import format_credentials, read_credentials

    path = Config.from_env().instance_path / "demo-credentials.json"
    if not path.exists():
        fail("no demo credentials: run `iom-gateway demo load` first")
    click.echo(f"Demo API clients (from {path}):")
    click.echo(format_credentials(read_credentials(path)))
    click.echo(
        "Get a token: curl -u CLIENT_ID:SECRET -d grant_type=client_credentials "
        "http://127.0.0.1:8000/oauth/token"
    )


# --- agreements -------------------------------------------------------------------------
@main.group()
def agreements() -> None:
    """Information-sharing agreements."""


@agreements.command("check")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
def agreements_check(path: Path | None) -> None:
    """Validate agreement files without loading them."""
    from gateway.agreement_store import check_files

    with session_scope() as (_, session):
        files = _agreement_paths(path)
        problems = check_files(session, files)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        fail(f"{len(problems)} problem(s) in {len(files)} file(s)")
    click.echo(f"{len(files)} agreement file(s) valid")


@agreements.command("load")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
def agreements_load(path: Path | None) -> None:
    """Load new agreement versions; a bad file leaves the version in force unchanged."""
    from gateway.agreement_store import NOT_REINSTATED, AgreementLoadError, load_agreement_files

    try:
        with session_scope() as (_, session):
            results = load_agreement_files(session, _agreement_paths(path))
    except AgreementLoadError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        fail("nothing was loaded")
    for line in results:
        click.echo(line)
    # The other files are loaded (committed above); a retired version is not, and exit status
    # 0 would tell a script that every file it named is in force.
    retired = [line for line in results if NOT_REINSTATED in line]
    if retired:
        fail(f"{len(retired)} agreement version(s) are retired and stay out of force")


@agreements.command("retire")
@click.argument("agreement_id")
def agreements_retire(agreement_id: str) -> None:
    """Take an agreement out of force (its versions stay in history)."""
    from gateway.agreement_store import retire_agreement

    with session_scope() as (_, session):
        retired = retire_agreement(session, agreement_id)
    if not retired:
        fail(f"no agreement {agreement_id} in force")
    click.echo(f"{agreement_id} retired")


@agreements.command("list")
def agreements_list() -> None:
    """Agreements in force, with days until review and expiry."""
    from policies.agreements import review_status

    today = datetime.now(UTC).date()
    with session_scope():
        policy = extensions.agreements().current()
        for agreement in sorted(policy.agreements, key=lambda a: a.id):
            status = review_status(agreement, today)
            click.echo(f"{agreement.id}@{agreement.version:<4} {status}")


@agreements.command("explain")
@click.option("--agency", required=True)
@click.option("--purpose", required=True)
@click.option("--action", required=True)
@click.option("--resource", required=True)
@click.option("--subject", "subject_ref", help="Internal subject id")
@click.option("--on", "on_date", type=click.DateTime(["%Y-%m-%d"]), help="Decide as of this date")
def agreements_explain(
    agency: str,
    purpose: str,
    action: str,
    resource: str,
    subject_ref: str | None,
    on_date: datetime | None,
) -> None:
    """Print the decision for one request, the grant, the fields and why others denied."""
    from gateway.services.decisions import decide_for_agency
    from policies.engine import explain

    when = on_date.replace(tzinfo=UTC) if on_date else datetime.now(UTC)
    with session_scope() as (_, session):
        policy = extensions.agreements().current()
        try:
            decision = decide_for_agency(
                session, policy, agency, action, resource, purpose, subject_ref, when
            )
        except (LookupError, ValueError) as error:
            fail(str(error))
        click.echo(explain(decision))


def _agreement_paths(path: Path | None) -> list[Path]:
    path = path or Path(extensions.config().agreements_dir)
    return sorted(path.glob("*.yaml")) if path.is_dir() else [path]


# --- keys -------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """Key management."""


@keys.command("rotate")
@click.option("--purpose", type=click.Choice(["pseudonym"]), default="pseudonym", show_default=True)
def keys_rotate(purpose: str) -> None:
    """Make a new pseudonymisation key version; old pseudonyms resolve during the grace period.

    Gateway processes load their keys when they start: restart them to issue the new version."""
    from gateway.services.pseudonymisation import rotate_pseudonym_key

    with session_scope() as (_, session):
        version = rotate_pseudonym_key(session, extensions.keys())
    click.echo(f"pseudonymisation key version {version} is now current")
    click.echo(
        "restart every gateway process now (gunicorn: kill -HUP <master pid>): running workers "
        f"keep issuing version {version - 1} pseudonyms, which expire with its grace period"
    )


# --- audit ------------------------------------------------------------------------------
@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("seal")
@click.option("--once", is_flag=True, help="Seal what is pending and exit")
@click.option("--interval", default=1.0, show_default=True)
def audit_seal(once: bool, interval: float) -> None:
    """Run the sealer: order committed events into the Merkle tree and sign checkpoints."""
    from gateway.sealer import run_sealer_loop, seal_once

    app = _app()
    with app.app_context():
        if once:
            click.echo(seal_once(app))
        else:
            run_sealer_loop(app, interval)


@audit.command("verify")
def audit_verify() -> None:
    """Recompute every leaf and the tree; check every checkpoint signature."""
    from gateway.sealer import verify_log

    with session_scope() as (app, _):
        report = verify_log(app)
    click.echo(
        f"tree size {report.tree_size}: {report.events_checked} event(s) and "
        f"{report.checkpoints_checked} checkpoint(s) checked"
    )
    if not report.ok:
        click.echo(f"first bad seq: {report.first_bad_seq}")
        for problem in report.problems:
            click.echo(f"  {problem}")
        sys.exit(1)
    click.echo("the audit log verifies")


@audit.command("export")
@click.option("--from-seq", default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def audit_export(from_seq: int, out: Path) -> None:
    """Write sealed events as JSON lines, with the latest checkpoint beside them."""
    from gateway.sealer import export_to_files

    with session_scope() as (app, _):
        click.echo(export_to_files(app, from_seq, out))


# --- metrics ----------------------------------------------------------------------------
@main.group()
def metrics() -> None:
    """Performance figures (reoffending, frequency, cost of offending)."""


@metrics.command("report")
@click.option("--period", help="A quarter (2015Q1) or a year (2015)")
@click.option("--from", "first", help="First period of a range (with --to)")
@click.option("--to", "last", help="Last period of a range")
@click.option("--group-by", default="area,cohort", show_default=True)
@click.option("--area", help="Only this area's cells")
@click.option("--cohort", help="Only this cohort's cells")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout")
def metrics_report(
    period: str | None,
    first: str | None,
    last: str | None,
    group_by: str,
    area: str | None,
    cohort: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """The board pack: every area, with the same disclosure control as the API; audited."""
    from marshmallow import ValidationError

    from audit.record import record_event
    from gateway.services import metrics as figures
    from schemas.metrics import MetricsQuerySchema

    given = {"period": period, "from": first, "to": last, "area": area, "cohort": cohort}
    try:
        validated = MetricsQuerySchema().load(
            {"group_by": group_by, **{k: v for k, v in given.items() if v is not None}}
        )
    except ValidationError as error:
        fail(json.dumps(error.messages, sort_keys=True))
    with session_scope() as (_, session):
        try:
            report = figures.reoffending_report(
                session,
                figures.query_from(validated),
                figures.Access.everything(),
                figures.settings_from(extensions.config()),
                datetime.now(UTC).date(),
            )
        except figures.UnpublishedBreakdown as error:
            fail(str(error))
        except figures.UnitCostError as error:
            fail(f"unit costs: {error}")
        record_event(session, figures.administrator_release_event(report, fmt))
    text = report.as_csv() if fmt == "csv" else json.dumps(report.as_dict(), indent=2, default=str)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"{len(report.cells)} cell(s) written to {out}")


if __name__ == "__main__":
    main()
