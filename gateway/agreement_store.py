"""Agreements in force: files are validated and stored as versions; workers compile the
newest unretired version of each into a PolicySet and swap it in when the table changes.

A bad file never half-loads (all files of a load are validated before any is stored) and
the version in force stays in force.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit.events import EventKind
from gateway.db import Database
from gateway.models import Agency, AgreementVersion
from gateway.services.registry import audit_admin
from policies.agreements import agreement_from_document, load_agreement_file
from policies.engine import PolicySet, compile_policy
from policies.model import Agreement, AgreementError, Problem


class AgreementLoadError(AgreementError):
    """Nothing was loaded; `problems` says why, by file, line and field."""


def known_agencies(session: Session) -> dict[str, str]:
    return {code: kind for code, kind in session.execute(sa.select(Agency.code, Agency.kind))}


def check_files(session: Session, paths: list[Path]) -> list[Problem]:
    problems: list[Problem] = []
    agencies = known_agencies(session)
    for path in paths:
        try:
            load_agreement_file(path, agencies)
        except AgreementError as error:
            problems.extend(error.problems)
    return problems


# A result line for a file whose version was loaded before and retired since: it stays out of
# force (see load_agreement_files) and the CLI exits non-zero, as the operator asked for it.
NOT_REINSTATED = "retired, not put back in force"


def load_agreement_files(session: Session, paths: list[Path]) -> list[str]:
    """Store each file's agreement as a new version; report what happened to each.

    Each line is `id@version: loaded`, `unchanged` or NOT_REINSTATED (a retired version is
    not reinstated by loading its file again: only a new version puts it back in force)."""
    agencies = known_agencies(session)
    parsed: list[Agreement] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            parsed.append(load_agreement_file(path, agencies))
        except AgreementError as error:
            problems.extend(error.problems)
    if problems:
        raise AgreementLoadError(problems)

    results = []
    for agreement in parsed:
        document = agreement.to_document()
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        stored = session.scalar(
            sa.select(AgreementVersion).where(
                AgreementVersion.agreement_id == agreement.id,
                AgreementVersion.version == agreement.version,
            )
        )
        if stored is not None:
            if stored.sha256 != digest:
                raise AgreementLoadError(
                    [
                        Problem(
                            agreement.source,
                            None,
                            "version",
                            f"{agreement.label} is already loaded with different content: "
                            "raise the version number",
                        )
                    ]
                )
            if stored.retired_at is not None and not _in_force(session, agreement.id):
                # Retiring is deliberate and audited: loading the same file again (as loading
                # the whole directory does) must not undo it, nor look as if it had.
                results.append(
                    f"{agreement.label}: {NOT_REINSTATED} (retired {stored.retired_at:%Y-%m-%d}; "
                    f"to put {agreement.id} back in force, load it as version "
                    f"{_newest_version(session, agreement.id) + 1})"
                )
                continue
            results.append(f"{agreement.label}: unchanged")
            continue
        newest = _newest_version(session, agreement.id)
        if agreement.version < newest:
            raise AgreementLoadError(
                [
                    Problem(
                        agreement.source,
                        None,
                        "version",
                        f"version {agreement.version} is older than loaded version {newest}",
                    )
                ]
            )
        session.add(
            AgreementVersion(
                agreement_id=agreement.id,
                version=agreement.version,
                document=document,
                sha256=digest,
            )
        )
        audit_admin(
            session,
            EventKind.AGREEMENT_LOADED,
            agency=None,
            details={"agreement": agreement.label, "sha256": digest},
        )
        results.append(f"{agreement.label}: loaded")
    return results


def _newest_version(session: Session, agreement_id: str) -> int:
    """The highest version stored, retired or not (0 if none)."""
    newest = session.scalar(
        sa.select(sa.func.max(AgreementVersion.version)).where(
            AgreementVersion.agreement_id == agreement_id
        )
    )
    return newest or 0


def _in_force(session: Session, agreement_id: str) -> bool:
    """Whether any version is unretired (the newest unretired one is the one in force)."""
    return (
        session.scalar(
            sa.select(AgreementVersion.id)
            .where(
                AgreementVersion.agreement_id == agreement_id,
                AgreementVersion.retired_at.is_(None),
            )
            .limit(1)
        )
        is not None
    )


def retire_agreement(session: Session, agreement_id: str) -> int:
    """Take every version of an agreement out of force (kept in history)."""
    rows = session.scalars(
        sa.select(AgreementVersion).where(
            AgreementVersion.agreement_id == agreement_id, AgreementVersion.retired_at.is_(None)
        )
    ).all()
    for row in rows:
        row.retired_at = sa.func.now()
    if rows:
        audit_admin(
            session, EventKind.AGREEMENT_RETIRED, agency=None, details={"agreement": agreement_id}
        )
    return len(rows)


class AgreementStore:
    """The compiled agreements in force for this worker, refreshed from the database."""

    REFRESH_SECONDS = 2.0

    def __init__(self, database: Database) -> None:
        self.database = database
        self._policy: PolicySet | None = None
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def current(self) -> PolicySet:
        now = time.monotonic()
        if self._policy is None or now - self._checked > self.REFRESH_SECONDS:
            self.refresh()
        assert self._policy is not None
        return self._policy

    def forget(self) -> None:
        """Recompile on next use (after agreements changed in this process)."""
        self._policy, self._stamp = None, None

    def refresh(self) -> None:
        # The request's own session: one transaction, and no second SQLite writer to wait on.
        session = self.database.session
        with self._lock:
            stamp = session.execute(
                sa.select(
                    sa.func.count(AgreementVersion.id),
                    sa.func.max(AgreementVersion.id),
                    sa.func.count(AgreementVersion.retired_at),
                )
            ).one()
            stamp = (*tuple(stamp), tuple(known_agencies(session).items()))
            if stamp != self._stamp or self._policy is None:
                self._policy = compile_policy(self._in_force(session))
                self._stamp = stamp
            self._checked = time.monotonic()

    def _in_force(self, session: Session) -> list[Agreement]:
        newest = (
            sa.select(
                AgreementVersion.agreement_id, sa.func.max(AgreementVersion.version).label("v")
            )
            .where(AgreementVersion.retired_at.is_(None))
            .group_by(AgreementVersion.agreement_id)
            .subquery()
        )
        rows = session.scalars(
            sa.select(AgreementVersion).join(
                newest,
                sa.and_(
                    AgreementVersion.agreement_id == newest.c.agreement_id,
                    AgreementVersion.version == newest.c.v,
                ),
            )
        ).all()
        agencies = known_agencies(session)
        return [agreement_from_document(row.document, agencies, source="db") for row in rows]
