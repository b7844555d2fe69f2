"""The floor under the gateway suite's target: the bare endpoint plus what every gateway read
must pay whatever the gateway does, and nothing of the gateway's own logic.

    GET /subjects/<id>  the bare endpoint's read of one subject row, with, layer by layer:
      rate limit   Flask-Limiter, one limit by address, in the gateway's per-worker storage
      token        the gateway's own bearer check (`gateway.oauth.OAuth.authenticate`: an
                   ES256 at+jwt through authlib, and the revocation and client-standing
                   query every request makes)
      schema       flask-smorest's response decorator and a marshmallow schema of the row
      audit        one audit event for the read (`audit.record.record_event`: the event row
                   with its indexes and its subject row) in place of the bare endpoint's row

It answers the question the target leaves open: how close to 0.6 x the bare endpoint can any
gateway get with the libraries the brief names and an audit event committed before each
response? What it leaves out is the gateway's work proper: the subject's relations an
agreement decision needs, the purpose check, the decision, disclosure, pseudonyms.

    BENCH_DATABASE_URL=... GATEWAY_KEY_DIR=... gunicorn --workers 2 'bench.floor_app:create_app()'
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import marshmallow as ma
import sqlalchemy as sa
from authlib.oauth2 import OAuth2Error
from flask import Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_smorest import Api, Blueprint

from audit.events import AuditEvent, EventKind
from audit.record import record_event
from bench.bare_app import hits, subjects
from gateway.config import Config
from gateway.db import Database, begin_read_phase, end_read_phase
from gateway.keys import load_keys
from gateway.limits import WorkerMemoryStorage
from gateway.oauth import OAuth

LAYERS = ("rate limit", "token", "schema", "audit")


class SubjectRow(ma.Schema):
    id = ma.fields.String()
    given_name = ma.fields.String()
    family_name = ma.fields.String()
    date_of_birth = ma.fields.Date()
    gender = ma.fields.String()
    area_code = ma.fields.String()
    postcode = ma.fields.String()


def create_app(url: str | None = None, layers: Sequence[str] = LAYERS,
               config: Config | None = None) -> Flask:
    """The bare endpoint with `layers` added; `config` for the token keys (default: from the
    environment, as the gateway's own)."""
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}")
    config = config or Config.from_env()
    database = Database(url or os.environ["BENCH_DATABASE_URL"])
    app = Flask(__name__)
    app.config.update(GATEWAY=config, API_TITLE="floor", API_VERSION="1",
                      OPENAPI_VERSION="3.1.0")
    app.extensions["gateway.db"] = database
    app.extensions["bench.engine"] = database.engine
    app.extensions["bench.floor_layers"] = tuple(layers)
    app.teardown_appcontext(lambda exc: database.session.remove())
    if "rate limit" in layers:
        Limiter(lambda: request.remote_addr or "unknown", app=app,
                default_limits=[os.environ.get("GATEWAY_RATE_LIMIT", "10000000 per minute")],
                storage_uri=f"{WorkerMemoryStorage.STORAGE_SCHEME[0]}://",
                strategy="sliding-window-counter")
    oauth = None
    if "token" in layers:
        oauth = OAuth(app, load_keys(config.key_dir, production=False))

    def read(subject_id: str) -> dict:
        # As the gateway reads: the reads outside a transaction, then a short one for the
        # write (`gateway.db.begin_read_phase`), so SQLite's write lock is held only for it.
        session = database.session()
        begin_read_phase(session)
        try:
            caller = oauth.authenticate() if oauth is not None else None
        except OAuth2Error:
            abort(401)
        row = session.connection().execute(
            sa.select(subjects).where(subjects.c.id == subject_id)
        ).mappings().first()
        if row is None:
            abort(404)
        end_read_phase(session, keep_writes=True)
        if "audit" in layers:
            record_event(session, AuditEvent(
                kind=EventKind.API_ACCESS, time=datetime.now(UTC), decision="permit",
                request_id=uuid.uuid4().hex,
                client_id=caller.client_id if caller else None,
                agency=caller.agency_code if caller else None,
                purpose=request.headers.get("X-Purpose"), method="GET",
                route="/subjects/<subject_id>", action="read", resource_type="subject",
                subject_ids=(subject_id,), status=200,
            ))
        else:
            session.execute(hits.insert().values(subject_id=subject_id, at=datetime.now(UTC)))
        session.commit()
        return dict(row)

    if "schema" in layers:
        blueprint = Blueprint("floor", __name__)
        blueprint.route("/subjects/<subject_id>")(
            blueprint.response(200, SubjectRow)(read)
        )
        Api(app).register_blueprint(blueprint)
    else:
        @app.get("/subjects/<subject_id>")
        def read_subject(subject_id: str) -> ResponseReturnValue:
            row = read(subject_id)
            return jsonify({**row, "date_of_birth": row["date_of_birth"].isoformat()})

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    return app
