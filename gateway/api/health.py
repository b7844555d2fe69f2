"""Liveness and readiness for load balancers and orchestrators.

Both are unauthenticated, so they answer only ready or not: no key versions, database
dialect or agreement counts, which tell an outsider what to attack and change with every
rotation. Operators see those with `iom-gateway` (keys, agreements list).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify

from gateway import extensions
from gateway.problems import Problem
from policies.model import AgreementError

blp = Blueprint("health", __name__)


def _database() -> None:
    extensions.database().session.execute(sa.text("SELECT 1"))


def _agreements() -> None:
    # Every decision needs the compiled agreements: a worker that cannot read or compile
    # them would answer every request with an error.
    extensions.agreements().current()


# name -> (check, title of the 503): the name is all a failed probe says about the cause.
CHECKS: dict[str, tuple[Callable[[], None], str]] = {
    "database": (_database, "The database is not reachable"),
    "agreements": (_agreements, "The agreements in force cannot be loaded"),
}


@blp.get("/healthz")
def alive() -> Response:
    return jsonify(status="ok")


@blp.get("/readyz")
def ready() -> Response:
    """200 {"status": "ready"}, or a 503 problem naming the first check that failed."""
    for name, (check, title) in CHECKS.items():
        try:
            check()
        except (sa.exc.SQLAlchemyError, AgreementError) as exc:
            raise Problem(503, f"{name}-unavailable", title, check=name) from exc
    return jsonify(status="ready")
