"""The baseline for the gateway suite: a bare Flask + SQLAlchemy endpoint on the same database.

    GET /subjects/<id>  read the subject row, insert one row into bench_bare_hits, commit,
                        answer the row as JSON (404 if there is none)

No authentication, no agreements, no pseudonyms, no audit, no schemas: what is left is what any
Flask + SQLAlchemy read-and-write endpoint costs. The engine is made by `gateway.db.make_engine`
so the database is configured the same way (SQLite WAL, BEGIN IMMEDIATE, the same pool).

    BENCH_DATABASE_URL=... gunicorn --workers 2 'bench.bare_app:create_app()'
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Flask, abort, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import make_engine

metadata = sa.MetaData()
hits = sa.Table(
    "bench_bare_hits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("subject_id", sa.String(36), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
# The columns of the gateway's subjects table this endpoint reads (not created here).
subjects = sa.Table(
    "subjects",
    sa.MetaData(),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("given_name", sa.String(100)),
    sa.Column("family_name", sa.String(100)),
    sa.Column("date_of_birth", sa.Date),
    sa.Column("gender", sa.String(20)),
    sa.Column("area_code", sa.String(8)),
    sa.Column("postcode", sa.String(10)),
)


def create_tables(url: str) -> None:
    """Create bench_bare_hits (once, before the workers start)."""
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def create_app(url: str | None = None) -> Flask:
    url = url or os.environ["BENCH_DATABASE_URL"]
    engine = make_engine(url)
    new_session = sessionmaker(bind=engine)
    app = Flask(__name__)
    app.extensions["bench.engine"] = engine

    @app.get("/subjects/<subject_id>")
    def read_subject(subject_id: str) -> ResponseReturnValue:
        session: Session
        with new_session() as session, session.begin():
            row = session.execute(
                sa.select(subjects).where(subjects.c.id == subject_id)
            ).mappings().first()
            if row is None:
                abort(404)
            session.execute(hits.insert().values(subject_id=subject_id, at=datetime.now(UTC)))
        return jsonify({**row, "date_of_birth": row["date_of_birth"].isoformat()})

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    return app
