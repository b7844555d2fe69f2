"""Running the audit sealer: in a thread of the embedded gateway, or as its own worker
(`iom-gateway audit seal`) when many gateway processes share one PostgreSQL."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit.checkpoint import CheckpointSigner
from audit.dbverify import VerifyReport, verify_database
from audit.query import latest_checkpoint, write_export
from audit.seal import SealResult, seal_pending_events
from gateway.config import Config
from gateway.db import Database
from gateway.keys import KeyStore

log = logging.getLogger("gateway.sealer")


def signer_for(keys: KeyStore) -> CheckpointSigner:
    return CheckpointSigner(
        key_name=f"iom-gateway-audit-v{keys.checkpoint_key_version}",
        private_key=keys.checkpoint_signing_key(),
    )


def seal_session(
    session: Session, config: Config, keys: KeyStore, *, batch_size: int = 5000
) -> SealResult:
    """Seal what is pending in this session's transaction (the caller commits)."""
    return seal_pending_events(
        session,
        signer_for(keys),
        origin=config.audit_origin,
        now=datetime.now(UTC),
        batch_size=batch_size,
        checkpoint_every_events=config.audit_checkpoint_every_events,
        checkpoint_every_seconds=config.audit_checkpoint_every_seconds,
        gap_grace_seconds=config.audit_gap_grace_seconds,
    )


def seal_until_idle(database: Database, config: Config, keys: KeyStore) -> int:
    """Seal in committed batches until nothing more is pending; returns events sealed."""
    total = 0
    while True:
        with database.session_factory() as session:
            result = seal_session(session, config, keys)
            session.commit()
        total += result.sealed
        if not result.more_pending:
            return total


def seal_once(app: Flask) -> str:
    database, keys, config = (
        app.extensions["gateway.db"],
        app.extensions["gateway.keys"],
        app.config["GATEWAY"],
    )
    sealed = seal_until_idle(database, config, keys)
    return f"sealed {sealed} event(s)"


def run_sealer_loop(app: Flask, interval: float, stop: threading.Event | None = None) -> None:
    database, keys, config = (
        app.extensions["gateway.db"],
        app.extensions["gateway.keys"],
        app.config["GATEWAY"],
    )
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            seal_until_idle(database, config, keys)
        except SQLAlchemyError as error:  # the database may be away; try again next round
            log.warning("sealing failed: %s", type(error).__name__)
        except Exception as error:
            # Anything else is a bug or a damaged log: say so, and keep trying, since the
            # gateway goes on serving and every event it writes still needs sealing (an
            # escaped exception would end this thread, and sealing, unseen).
            log.error(
                "sealing failed unexpectedly: %s",
                type(error).__name__,
                exc_info=bool(app.config.get("GATEWAY_LOG_TRACEBACKS")),
            )
        stop.wait(interval)


def start_sealer(app: Flask) -> threading.Thread:
    """The embedded default: one daemon thread per process seals every `interval` seconds.

    Only one sealer works at a time (the seal state row is locked), so several processes
    running this thread is safe, merely redundant."""
    interval = app.config["GATEWAY"].audit_seal_interval_seconds
    thread = threading.Thread(
        target=run_sealer_loop, args=(app, interval), name="audit-sealer", daemon=True
    )
    thread.start()
    return thread


def verify_log(app: Flask) -> VerifyReport:
    """Recompute every leaf and the tree, check every checkpoint signature (CLI `audit verify`)."""
    keys: KeyStore = app.extensions["gateway.keys"]
    public_keys = keys.checkpoint_public_keys()
    current = keys.checkpoint_key_version
    older = [key for version, key in sorted(public_keys.items()) if version != current]
    with app.extensions["gateway.db"].session_factory() as session:
        report = verify_database(session, public_keys[current], older_keys=older)
    return report


def export_to_files(app: Flask, from_seq: int, out: Path) -> str:
    """Write the sealed events as JSON lines, and beside them the latest checkpoint and the
    public key, ready for `python -m audit.verify`."""
    keys: KeyStore = app.extensions["gateway.keys"]
    with app.extensions["gateway.db"].session_factory() as session, out.open("w") as handle:
        # The checkpoint first: a sealer may commit between the two reads (each statement
        # sees the latest commits), and the log only grows, so the export then covers the
        # checkpoint. Read after, it could cover events the export lacks.
        checkpoint = latest_checkpoint(session)
        count = write_export(session, handle, from_seq)
    if checkpoint is not None:
        out.with_suffix(".checkpoint.json").write_text(json.dumps({"note": checkpoint.note}))
    public = keys.checkpoint_public_keys()[keys.checkpoint_key_version]
    out.with_suffix(".pub.pem").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return f"wrote {count} event(s) to {out}"
