"""The gateway's data model: agencies and their API clients, the people IOM manages, and
the facts partners share about them (cohorts, risk, needs, who manages whom).

Identifiers live in their own table, normalised, so that one person is one subject however
partners spell a PNC or CRN; names, dates of birth and identifiers never leave this schema
except through `policies.disclose`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gateway.db import Base, utcnow

AGENCY_KINDS = (
    "police",
    "nps",
    "crc",
    "yot",
    "local_authority",
    "health",
    "voluntary",
    "ig_audit",
)


def new_uuid() -> str:
    return str(uuid.uuid4())


class Area(Base):
    """A local authority area: IOM accountability is per local authority."""

    __tablename__ = "areas"
    code: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    policing_units: Mapped[list[PolicingUnit]] = relationship(back_populates="area")


class PolicingUnit(Base):
    __tablename__ = "policing_units"
    code: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    area_code: Mapped[str] = mapped_column(sa.ForeignKey("areas.code"), index=True)
    area: Mapped[Area] = relationship(back_populates="policing_units")


class Agency(Base):
    __tablename__ = "agencies"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    kind: Mapped[str] = mapped_column(sa.String(20))
    areas: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    suspended_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    clients: Mapped[list[ApiClient]] = relationship(back_populates="agency")

    __table_args__ = (sa.CheckConstraint(f"kind IN {AGENCY_KINDS}", name="agency_kind"),)


class ApiClient(Base):
    """An agency's system that calls the gateway (OAuth 2.0 client, RFC 6749 s.2).

    Implements the client interface authlib's authorization server expects.
    """

    __tablename__ = "api_clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    auth_method: Mapped[str] = mapped_column(sa.String(32))
    secret_hash: Mapped[str | None] = mapped_column(sa.String(200))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    scopes: Mapped[str] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    agency: Mapped[Agency] = relationship(back_populates="clients", lazy="joined")

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.agency.suspended_at is None

    # --- authlib ClientMixin ---
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.scopes.split())
        if not scope:
            return " ".join(sorted(allowed))
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        from gateway.credentials import verify_secret

        return self.secret_hash is not None and verify_secret(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class RevokedToken(Base):
    """Access tokens revoked before expiry (RFC 7009); rows can be purged after `expires_at`."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires_at: Mapped[datetime]


class UsedClientAssertion(Base):
    """The `jti` of every accepted private_key_jwt assertion, so none can be replayed."""

    __tablename__ = "used_client_assertions"
    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    expires_at: Mapped[datetime]


class Subject(Base):
    """A person IOM partners manage or refer. `id` is internal and never a real identifier."""

    __tablename__ = "subjects"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    given_name: Mapped[str] = mapped_column(sa.String(100))
    family_name: Mapped[str] = mapped_column(sa.String(100))
    date_of_birth: Mapped[date]
    gender: Mapped[str] = mapped_column(sa.String(20))
    ethnicity: Mapped[str | None] = mapped_column(sa.String(10))
    address_line: Mapped[str | None] = mapped_column(sa.String(200))
    postcode: Mapped[str | None] = mapped_column(sa.String(10))
    phone: Mapped[str | None] = mapped_column(sa.String(20))
    area_code: Mapped[str] = mapped_column(sa.ForeignKey("areas.code"), index=True)
    policing_unit_code: Mapped[str | None] = mapped_column(sa.ForeignKey("policing_units.code"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    identifiers: Mapped[list[SubjectIdentifier]] = relationship(
        back_populates="subject", cascade="all, delete-orphan"
    )
    cohorts: Mapped[list[CohortMembership]] = relationship(cascade="all, delete-orphan")
    risk_assessments: Mapped[list[RiskAssessment]] = relationship(
        cascade="all, delete-orphan", order_by="RiskAssessment.assessed_at"
    )
    needs: Mapped[list[Need]] = relationship(cascade="all, delete-orphan")
    management: Mapped[list[Management]] = relationship(cascade="all, delete-orphan")
    victim_links: Mapped[list[VictimLink]] = relationship(cascade="all, delete-orphan")
    referrals: Mapped[list[Referral]] = relationship(viewonly=True, order_by="Referral.created_at")


class SubjectIdentifier(Base):
    """A normalised strong identifier (PNC, CRN, NOMIS) or an agency-local reference."""

    __tablename__ = "subject_identifiers"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    scheme: Mapped[str] = mapped_column(sa.String(40))
    value: Mapped[str] = mapped_column(sa.String(40))
    subject: Mapped[Subject] = relationship(back_populates="identifiers")
    __table_args__ = (sa.UniqueConstraint("scheme", "value", name="uq_identifier"),)


class CohortMembership(Base):
    __tablename__ = "cohort_memberships"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    cohort: Mapped[str] = mapped_column(sa.String(16), index=True)
    area_code: Mapped[str] = mapped_column(sa.ForeignKey("areas.code"))
    start_date: Mapped[date]
    end_date: Mapped[date | None]
    set_by_agency_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("agencies.id"),
        doc="The agency whose caseload sync set the flag; only its sync may end it, once none "
        "of its cases lists it, and hands it to another agency whose cases still do (None: "
        "set otherwise, ended by whoever runs the cohort)",
    )


class RiskAssessment(Base):
    """Two different questions: likelihood of reoffending, and risk of serious harm."""

    __tablename__ = "risk_assessments"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    reoffending_score: Mapped[int | None]
    reoffending_band: Mapped[str | None] = mapped_column(sa.String(12))
    serious_harm_level: Mapped[str | None] = mapped_column(sa.String(12))
    assessed_by_agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"))
    assessed_at: Mapped[datetime]


class Need(Base):
    """The current level of one of the seven resettlement pathways."""

    __tablename__ = "needs"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    pathway: Mapped[str] = mapped_column(sa.String(24))
    level: Mapped[str] = mapped_column(sa.String(12))
    assessed_at: Mapped[datetime]
    __table_args__ = (sa.UniqueConstraint("subject_id", "pathway", name="uq_need_pathway"),)


class Management(Base):
    """A case: which agency manages the subject, from when, statutory or not."""

    __tablename__ = "management"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), index=True)
    local_case_id: Mapped[str | None] = mapped_column(sa.String(64))
    statutory: Mapped[bool]
    offender_manager_ref: Mapped[str | None] = mapped_column(sa.String(64))
    start_date: Mapped[date]
    end_date: Mapped[date | None]
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    transfer_to: Mapped[str | None] = mapped_column(
        sa.String(32), doc="Agency the case is flagged to move to (allocation by risk)"
    )
    record_hash: Mapped[str | None] = mapped_column(
        sa.String(64), doc="Hash of the last synced record: an unchanged re-sync writes nothing"
    )
    cohorts: Mapped[list[str] | None] = mapped_column(
        sa.JSON(none_as_null=True),
        doc="Cohort flags the last synced record listed: an agency keeps a flag while any of "
        "its cases lists it (None: not known, or the case was ended by a snapshot)",
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    agency: Mapped[Agency] = relationship(lazy="joined")
    __table_args__ = (sa.UniqueConstraint("agency_id", "local_case_id", name="uq_management_case"),)


class VictimLink(Base):
    """A victim linked to a domestic-abuse perpetrator: the most sensitive data held."""

    __tablename__ = "victim_links"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    victim_ref: Mapped[str] = mapped_column(sa.String(36), default=new_uuid)
    relationship_to_subject: Mapped[str] = mapped_column(sa.String(40))


class AgreementVersion(Base):
    """Every loaded version of every agreement; the newest unretired one is in force."""

    __tablename__ = "agreement_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[int]
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]
    __table_args__ = (sa.UniqueConstraint("agreement_id", "version", name="uq_agreement_version"),)


class PseudonymKeyVersion(Base):
    """A pseudonymisation key version (the key itself stays in the key store)."""

    __tablename__ = "pseudonym_key_versions"
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    superseded_at: Mapped[datetime | None]


class PseudonymIndex(Base):
    """Resolves an inbound pseudonym to its subject with one indexed lookup."""

    __tablename__ = "pseudonym_index"
    pseudonym: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(sa.String(120), index=True)
    key_version: Mapped[int]
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)


class Referral(Base):
    """A referral from one agency to another, for one subject, under one declared purpose.

    `version` is the optimistic-concurrency token behind the ETag: a transition applies only
    if the version the caseworker saw is still current.
    """

    __tablename__ = "referrals"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    from_agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), index=True)
    to_agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), index=True)
    purpose: Mapped[str] = mapped_column(sa.String(64))
    service: Mapped[str] = mapped_column(sa.String(40))
    pathways: Mapped[list[str]] = mapped_column(sa.JSON)
    reasons: Mapped[list[str]] = mapped_column(sa.JSON)
    summary: Mapped[str | None] = mapped_column(sa.Text)
    urgency: Mapped[str] = mapped_column(sa.String(12))
    risk_shared: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    consent: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    version: Mapped[int] = mapped_column(default=1)
    decision_due: Mapped[datetime]
    overdue_notified_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    from_agency: Mapped[Agency] = relationship(foreign_keys=[from_agency_id], lazy="joined")
    to_agency: Mapped[Agency] = relationship(foreign_keys=[to_agency_id], lazy="joined")
    transitions: Mapped[list[ReferralTransition]] = relationship(
        order_by="ReferralTransition.id", cascade="all, delete-orphan"
    )
    outcomes: Mapped[list[Outcome]] = relationship(
        order_by="[Outcome.occurred_on, Outcome.recorded_at]", cascade="all, delete-orphan"
    )


class ReferralTransition(Base):
    """One step of a referral's history: when, by which agency, on whose behalf."""

    __tablename__ = "referral_transitions"
    id: Mapped[int] = mapped_column(primary_key=True)
    referral_id: Mapped[str] = mapped_column(sa.ForeignKey("referrals.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(sa.String(16))
    to_status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(40))
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"))
    on_behalf_of: Mapped[str | None] = mapped_column(sa.String(128))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    agency: Mapped[Agency] = relationship(lazy="joined")


class Outcome(Base):
    """What happened after a referral: engagement, completion, a further offence."""

    __tablename__ = "outcomes"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    referral_id: Mapped[str] = mapped_column(sa.ForeignKey("referrals.id"), index=True)
    type: Mapped[str] = mapped_column(sa.String(40))
    occurred_on: Mapped[date]
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    recorded_by_agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    recorded_by: Mapped[Agency] = relationship(lazy="joined")


class IdempotentRequest(Base):
    """A create request's key and fingerprint, and the response it got, for safe retries."""

    __tablename__ = "idempotent_requests"
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int]
    body: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    headers: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChangeFeedCounter(Base):
    """One row whose increment orders the change feed; see `services.changes`."""

    __tablename__ = "change_feed_counter"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_position: Mapped[int] = mapped_column(sa.BigInteger)


class Change(Base):
    """One entry of the partners' change feed: positions are gap-free and in commit order."""

    __tablename__ = "changes"
    position: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(sa.String(40))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    subject_id: Mapped[str | None] = mapped_column(sa.ForeignKey("subjects.id"))
    referral_id: Mapped[str | None] = mapped_column(sa.ForeignKey("referrals.id"))
    outcome_id: Mapped[str | None] = mapped_column(sa.ForeignKey("outcomes.id"))
    by_agency_id: Mapped[int | None] = mapped_column(sa.ForeignKey("agencies.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


class ChangeAudience(Base):
    """Which agencies a change is for; the feed of an agency is a filtered view of `changes`."""

    __tablename__ = "change_audience"
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), primary_key=True)
    position: Mapped[int] = mapped_column(sa.ForeignKey("changes.position"), primary_key=True)


class Offence(Base):
    """A further offence, as reported through an outcome or a caseload update.

    The performance figures count these; `source` and `source_ref` say where each came from,
    so a report sent twice is recorded once."""

    __tablename__ = "offences"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(sa.ForeignKey("subjects.id"), index=True)
    offence_type: Mapped[str] = mapped_column(sa.String(40))
    offence_date: Mapped[date] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(sa.String(16))
    source_ref: Mapped[str] = mapped_column(sa.String(80))
    reported_by_agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        sa.UniqueConstraint(
            "source", "source_ref", "offence_type", "offence_date", name="uq_offence_report"
        ),
    )


SNAPSHOT_STATUSES = ("open", "completed", "abandoned", "expired")


class CaseloadSnapshot(Base):
    """A caseload snapshot sent in many batches: an agency's whole caseload rarely fits one.

    Batches tagged with the snapshot are applied as usual and their local case ids remembered
    (`CaseloadSnapshotCase`); completing it ends the agency's open cases not seen since it was
    opened. See `gateway.services.snapshots`."""

    __tablename__ = "caseload_snapshots"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    agency_id: Mapped[int] = mapped_column(sa.ForeignKey("agencies.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    opened_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    batches: Mapped[int] = mapped_column(default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(
        sa.JSON, doc="What completing it did, answered again to a repeated completion"
    )
    __table_args__ = (
        sa.CheckConstraint(f"status IN {SNAPSHOT_STATUSES}", name="caseload_snapshot_status"),
    )


class CaseloadSnapshotCase(Base):
    """A local case id an open snapshot has seen (kept only until it is closed)."""

    __tablename__ = "caseload_snapshot_cases"
    snapshot_id: Mapped[str] = mapped_column(
        sa.ForeignKey("caseload_snapshots.id"), primary_key=True
    )
    local_case_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
