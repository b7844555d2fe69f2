"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify

from gateway import extensions
from gateway.problems import Problem

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def alive() -> Response:
    return jsonify(status="ok")


@blp.get("/readyz")
def ready() -> Response:
    try:
        extensions.database().session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise Problem(503, "database-unavailable", "The database is not reachable") from exc
    keys = extensions.keys()
    return jsonify(
        status="ready",
        database=extensions.database().engine.dialect.name,
        token_key_version=keys.token_key_version,
        checkpoint_key_version=keys.checkpoint_key_version,
        pseudonym_key_version=keys.pseudonym_key_version,
        agreements_in_force=len(extensions.agreements().current().agreements),
    )
