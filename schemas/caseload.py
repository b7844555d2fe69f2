"""Caseload sync and the caseload change feed, on the wire.

A sync batch is one JSON document: the options (`mode`, `atomic`, `confirm_end`) travel in the
body beside the records, so an Idempotency-Key fingerprint covers the whole request.

Validation is strict and whole-batch: a batch with any malformed record (a wrong type, an
unknown field, a bad date, an identifier that does not normalise, a repeated local case id) is
refused with 422 and nothing is applied. Per-record *rejections* in the response are for
records that are well formed but cannot be applied (identity conflicts, an area the agency
does not serve, no agreement).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from policies.identifiers import IdentifierError, normalise_identifier
from policies.vocabulary import AREAS, COHORTS, PATHWAYS, SERIOUS_HARM_LEVELS
from schemas.caseload_fast import BatchRules, load_batch
from schemas.common import StrictSchema, UTCDateTime
from schemas.referrals import OFFENCE_TYPES, ChangeSchema
from schemas.subjects import RiskSchema, SubjectSchema

MAX_BATCH = 1000
MAX_OFFENCES = 50
CASE_STATUSES = ("active", "terminated", "transferred")
NEED_LEVELS = ("low", "medium", "high")
GENDERS = ("male", "female", "other", "unknown")
RESULTS = ("created", "updated", "unchanged", "rejected")
# Short enough that the offence source reference "<agency>:<local id>" fits its 80 characters.
LOCAL_CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/._:-]{0,39}\Z")  # \Z: no trailing \n
LOCAL_CASE_ID = validate.Regexp(
    LOCAL_CASE_ID_PATTERN,
    error="1-40 characters: letters, digits and / . _ : - (starting with a letter or digit)",
)
EARLIEST = date(1900, 1, 1)
# Control characters and lone surrogates (which no database encoding can store) in free text.
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
FAST_PATH_RULES = BatchRules(
    max_batch=MAX_BATCH,
    max_offences=MAX_OFFENCES,
    local_case_id=LOCAL_CASE_ID_PATTERN,
    unstorable=_UNSTORABLE,
    statuses=frozenset(CASE_STATUSES),
    need_levels=frozenset(NEED_LEVELS),
    genders=frozenset(GENDERS),
    offence_types=frozenset(OFFENCE_TYPES),
)


def _today() -> date:
    return datetime.now(UTC).date()


def _plain_text(value: str) -> None:
    if _UNSTORABLE.search(value):
        raise ValidationError("control characters and unpaired surrogates are not accepted")


class _StrictBoolean(fields.Boolean):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:  # not `in {True}`: 1 == True, 0 == False
            return value
        raise self.make_error("invalid", input=value)


def StrictBoolean(**kwargs: Any) -> fields.Boolean:
    """Only JSON true/false: "yes" or 1 for a flag is a client bug worth reporting."""
    return _StrictBoolean(**kwargs)


class IdentifiersSchema(StrictSchema):
    """Strong identifiers, at least one; normalised on load (`12/123A` is `2012/0000123A`)."""

    pnc = fields.String(validate=validate.Length(min=1, max=20))
    crn = fields.String(validate=validate.Length(min=1, max=20))
    nomis = fields.String(validate=validate.Length(min=1, max=20))

    @post_load
    def _normalise(self, data: dict, **_: object) -> dict:
        if not data:
            raise ValidationError("give at least one of pnc, crn, nomis", "_schema")
        errors: dict[str, list[str]] = {}
        normalised = {}
        for scheme, value in data.items():
            try:
                normalised[scheme] = normalise_identifier(scheme, value)
            except IdentifierError as error:  # the message never repeats the value
                errors[scheme] = [str(error)]
        if errors:
            raise ValidationError(errors)
        return normalised


class CaseRiskSchema(StrictSchema):
    serious_harm_level = fields.String(
        allow_none=True, validate=validate.OneOf(SERIOUS_HARM_LEVELS)
    )
    reoffending_score = fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=100)
    )
    assessed_on = fields.Date(required=True)

    @validates_schema
    def _complete(self, data: dict, **_: object) -> None:
        if data.get("serious_harm_level") is None and data.get("reoffending_score") is None:
            raise ValidationError("give serious_harm_level, reoffending_score or both")
        assessed = data.get("assessed_on")
        if isinstance(assessed, date) and not date(2000, 1, 1) <= assessed <= _today():
            raise ValidationError("must be a date from 2000 up to today", "assessed_on")


class CaseOffenceSchema(StrictSchema):
    offence_type = fields.String(required=True, validate=validate.OneOf(OFFENCE_TYPES))
    offence_date = fields.Date(required=True)

    @validates_schema
    def _plausible(self, data: dict, **_: object) -> None:
        when = data.get("offence_date")
        if isinstance(when, date) and not date(2000, 1, 1) <= when <= _today():
            raise ValidationError("must be a date from 2000 up to today", "offence_date")


class CaseRecordSchema(StrictSchema):
    """One case as the agency's case-management system holds it."""

    local_case_id = fields.String(required=True, validate=LOCAL_CASE_ID)
    identifiers = fields.Nested(IdentifiersSchema, required=True)
    given_name = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=100), _plain_text],
        metadata={"description": "For a new person's record only; never used to match"},
    )
    family_name = fields.String(
        required=True, validate=[validate.Length(min=1, max=100), _plain_text]
    )
    date_of_birth = fields.Date(
        required=True,
        metadata={"description": "Checked when a strong identifier links a case to a person"},
    )
    gender = fields.String(validate=validate.OneOf(GENDERS))
    area = fields.String(
        required=True,
        validate=validate.OneOf(sorted(AREAS)),
        metadata={"description": "Local authority area; one your agency serves"},
    )
    status = fields.String(load_default="active", validate=validate.OneOf(CASE_STATUSES))
    statutory = StrictBoolean(required=True)
    offender_manager_ref = fields.String(
        allow_none=True, validate=[validate.Length(min=1, max=64), _plain_text]
    )
    start_date = fields.Date(metadata={"description": "Default: today, for a new case"})
    end_date = fields.Date(
        metadata={"description": "Terminated or transferred cases only; default today"}
    )
    risk = fields.Nested(CaseRiskSchema, allow_none=True)
    needs = fields.Dict(
        keys=fields.String(validate=validate.OneOf(PATHWAYS)),
        values=fields.String(validate=validate.OneOf(NEED_LEVELS)),
    )
    cohorts = fields.List(
        fields.String(validate=validate.OneOf(sorted(COHORTS))),
        validate=validate.Length(max=len(COHORTS)),
    )
    offences = fields.List(
        fields.Nested(CaseOffenceSchema),
        validate=validate.Length(max=MAX_OFFENCES),
        metadata={"description": "Further offences known to your agency"},
    )

    @validates_schema
    def _consistent(self, data: dict, **_: object) -> None:
        today = _today()
        born = data.get("date_of_birth")
        if isinstance(born, date) and not EARLIEST <= born <= today:
            raise ValidationError("must be a date from 1900 up to today", "date_of_birth")
        start, end = data.get("start_date"), data.get("end_date")
        if isinstance(start, date) and not date(2000, 1, 1) <= start <= today:
            raise ValidationError("must be a date from 2000 up to today", "start_date")
        if end is not None:
            if data.get("status", "active") == "active":
                raise ValidationError("only a terminated or transferred case has one", "end_date")
            if isinstance(end, date) and not (
                date(2000, 1, 1) <= end <= today and (start is None or start <= end)
            ):
                raise ValidationError(
                    "must be a date from 2000 up to today, on or after start_date", "end_date"
                )
        cohorts = data.get("cohorts") or []
        if len(set(cohorts)) != len(cohorts):
            raise ValidationError("each cohort once", "cohorts")


class CaseloadSyncSchema(StrictSchema):
    mode = fields.String(
        load_default="upsert",
        validate=validate.OneOf(["upsert", "snapshot"]),
        metadata={
            "description": "upsert: apply these records. snapshot: these records are your whole "
            "caseload; your other open cases are ended (a caseload that fits one batch; "
            "larger ones use a snapshot session, see snapshot_id)"
        },
    )
    snapshot_id = fields.UUID(
        metadata={
            "description": "This batch is part of the snapshot session with this id (from "
            "POST /caseload/snapshots): applied as an upsert, its local case ids remembered"
        },
    )
    atomic = StrictBoolean(
        load_default=False,
        metadata={"description": "All or nothing: any rejected record -> 422, nothing applied"},
    )
    confirm_end = StrictBoolean(
        load_default=False,
        metadata={"description": "Allow a snapshot to end more than the configured share"},
    )
    records = fields.Nested(
        CaseRecordSchema,
        many=True,  # one load for the batch rather than one per record
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )

    def load(self, data: Any, *, many: bool | None = None, **kwargs: Any) -> Any:
        """A well-formed batch through the fast path (`schemas.caseload_fast`), anything else
        through the schema itself, so every error is the schema's."""
        if not many and not kwargs:
            loaded = load_batch(data, FAST_PATH_RULES)
            if loaded is not None:
                return loaded
        return super().load(data, many=many, **kwargs)

    @validates_schema
    def _one_kind_of_snapshot(self, data: dict, **_: object) -> None:
        if data.get("snapshot_id") is not None and data.get("mode") == "snapshot":
            raise ValidationError(
                "a batch of a snapshot session is an upsert; the session's completion ends "
                "the missing cases",
                "mode",
            )

    @validates_schema
    def _unique_local_ids(self, data: dict, **_: object) -> None:
        first: dict[str, int] = {}
        repeats = []
        for index, record in enumerate(data.get("records") or []):
            seen = first.setdefault(record["local_case_id"], index)
            if seen != index:
                repeats.append(f"records {seen} and {index}")
        if repeats:
            # Positions, not values: a case id points at a person.
            raise ValidationError(
                "local_case_id repeated in one batch: " + ", ".join(repeats[:20]), "records"
            )


class RecordResultSchema(Schema):
    index = fields.Integer()
    local_case_id = fields.String()
    result = fields.String(metadata={"enum": list(RESULTS)})
    subject_ref = fields.String(allow_none=True)
    transfer_to = fields.String(
        allow_none=True, metadata={"description": "Agency the case is flagged to move to"}
    )
    problem = fields.Dict(allow_none=True, metadata={"description": "RFC 9457 problem object"})


class SyncSummarySchema(Schema):
    received = fields.Integer()
    created = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()
    rejected = fields.Integer()
    ended = fields.Integer(metadata={"description": "Cases a snapshot ended"})
    transfers_flagged = fields.Integer()


class CaseloadSyncResultSchema(Schema):
    mode = fields.String()
    atomic = fields.Boolean()
    snapshot_id = fields.String(
        allow_none=True, metadata={"description": "The snapshot session the batch was part of"}
    )
    summary = fields.Nested(SyncSummarySchema)
    results = fields.List(fields.Nested(RecordResultSchema))
    ended = fields.List(fields.String(), metadata={"description": "Local ids a snapshot ended"})


SNAPSHOT_STATUSES = ("open", "completed", "abandoned", "expired")


class SnapshotOpenSchema(StrictSchema):
    """Opening a snapshot takes no options (send `{}`): a place for them when some are needed."""


class SnapshotCompleteSchema(StrictSchema):
    confirm_end = StrictBoolean(
        load_default=False,
        metadata={"description": "Allow the snapshot to end more than the configured share"},
    )


class SnapshotSchema(Schema):
    """A caseload snapshot sent in many batches."""

    ref = fields.String(metadata={"description": "The snapshot id: send it as `snapshot_id`"})
    status = fields.String(metadata={"enum": list(SNAPSHOT_STATUSES)})
    opened_at = UTCDateTime()
    expires_at = UTCDateTime(metadata={"description": "Complete it before then"})
    closed_at = UTCDateTime(allow_none=True)
    batches = fields.Integer(metadata={"description": "Batches applied with this snapshot id"})
    cases_seen = fields.Integer(metadata={"description": "Distinct local case ids seen"})
    open_cases = fields.Integer(
        allow_none=True, metadata={"description": "Your open cases when it was completed"}
    )
    ended = fields.List(
        fields.String(),
        allow_none=True,
        metadata={"description": "Local ids of the cases its completion ended"},
    )


class CaseViewSchema(Schema):
    """Your own case for the person, with the partnership's current risk, needs and cohorts."""

    local_case_id = fields.String()
    subject_ref = fields.String()
    status = fields.String()
    statutory = fields.Boolean()
    offender_manager_ref = fields.String(allow_none=True)
    risk = fields.Nested(RiskSchema, allow_none=True)
    needs = fields.Dict(keys=fields.String(), values=fields.String())
    cohorts = fields.List(fields.String())
    updated_at = UTCDateTime()


class CaseloadChangeSchema(ChangeSchema):
    case = fields.Nested(CaseViewSchema, allow_none=True)
    subject = fields.Nested(SubjectSchema, allow_none=True)


class CaseloadChangePageSchema(Schema):
    items = fields.List(fields.Nested(CaseloadChangeSchema))
    next_cursor = fields.String(metadata={"description": "Pass as `since` next time (never null)"})
