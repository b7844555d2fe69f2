"""The application factory."""

from __future__ import annotations

import logging

from flask import Flask, Response, g
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import access
from gateway.agreement_store import AgreementStore
from gateway.api import (
    agreements,
    audit,
    caseload,
    changes,
    health,
    metrics,
    oauth_views,
    pseudonyms,
    referrals,
    subjects,
)
from gateway.config import Config
from gateway.db import Database
from gateway.keys import load_keys
from gateway.limits import init_rate_limits
from gateway.oauth import OAuth
from gateway.openapi import init_api
from gateway.problems import Problem, problem_response
from gateway.sealer import start_sealer
from gateway.services.pseudonymisation import record_key_versions_at_start

log = logging.getLogger("gateway")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'"
)


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__, instance_path=str(config.instance_path))
    app.config.update(GATEWAY=config, MAX_CONTENT_LENGTH=config.max_body_bytes)
    if config.trusted_proxies:
        # The client's address (per-address rate limits) from the proxies' X-Forwarded-For.
        hops = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    config.instance_path.mkdir(parents=True, exist_ok=True)

    keys = load_keys(config.key_dir, production=config.production)
    database = Database(config.database_url)
    # Keys are loaded once, here (a new version needs a restart): record which versions this
    # start sees, so a version superseded by a newer one starts its grace period now.
    record_key_versions_at_start(database, keys)
    app.extensions["gateway.keys"] = keys
    app.extensions["gateway.db"] = database
    app.extensions["gateway.oauth"] = OAuth(app, keys)
    app.extensions["gateway.agreements"] = AgreementStore(database)

    api = init_api(app)
    app.register_blueprint(oauth_views.blp)
    app.register_blueprint(health.blp)
    for blueprint in (
        subjects.blp,
        agreements.blp,
        referrals.blp,
        changes.blp,
        caseload.blp,
        pseudonyms.blp,
        audit.blp,
        metrics.blp,
    ):
        api.register_blueprint(blueprint)

    app.before_request(access.begin_request)
    init_rate_limits(app)  # after authentication: keyed by client, 429s audited
    # Flask runs after_request hooks last-registered first: the security headers go on last,
    # so they are also on the 503 that finish_request substitutes when the audit write fails.
    app.after_request(_security_headers)
    app.after_request(access.finish_request)
    app.teardown_appcontext(lambda exc: database.session.remove())
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(SQLAlchemyError, _database_error)
    app.register_error_handler(Exception, _unexpected)

    if config.audit_seal_in_process:
        start_sealer(app)
    return app


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _database_unavailable(error: OperationalError) -> Response:
    log.warning("database unavailable (request %s): %s", g.get("request_id"), type(error).__name__)
    return problem_response(Problem(503, "database-unavailable", detail="Try again shortly."))


def _database_error(error: SQLAlchemyError) -> Response:
    log.error("database error (request %s): %s", g.get("request_id"), type(error).__name__)
    return problem_response(Problem(503, "database-error", detail="Nothing was changed."))


def _unexpected(error: Exception) -> Response:
    # Only the exception type: messages and tracebacks may carry personal data.
    log.error("unexpected %s (request %s)", type(error).__name__, g.get("request_id"))
    if app_debug_tracebacks():
        log.exception("traceback")
    return problem_response(Problem(500))


def app_debug_tracebacks() -> bool:
    from flask import current_app

    return bool(current_app.config.get("GATEWAY_LOG_TRACEBACKS"))
