"""A fast path for loading a well-formed caseload batch, beside the marshmallow schema.

Loading a batch of 1,000 nested records through marshmallow costs more than everything the
gateway then does with it in SQLite, because each field of each record is a chain of Python
calls. Nearly every batch is well formed, so it is loaded here first with checks written out
once per field: a stricter or equal test than the schema's, and the same result.

Anything this module is not sure of (a wrong type, a value out of range, an unknown field, a
`1` for `true`, a date spelt another way) makes `load_batch` answer None, and the request is
loaded by `schemas.caseload.CaseloadSyncSchema` as before: the schema stays the wire contract,
the OpenAPI document and the source of every error message. The property test in
`tests/schemas/test_caseload_fast.py` checks that whatever this accepts, the schema accepts
with an equal result.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from policies.identifiers import IdentifierError, normalise_identifier
from policies.vocabulary import AREAS, COHORTS, PATHWAYS, SERIOUS_HARM_LEVELS

# The schema's vocabularies, repeated here by import only (schemas.caseload passes its own).
_TOP = frozenset({"mode", "atomic", "confirm_end", "records", "snapshot_id"})
_REQUIRED = ("local_case_id", "identifiers", "given_name", "family_name", "date_of_birth",
             "area", "statutory")  # fmt: skip
_RECORD = frozenset(
    {
        *_REQUIRED,
        "gender",
        "status",
        "offender_manager_ref",
        "start_date",
        "end_date",
        "risk",
        "needs",
        "cohorts",
        "offences",
    }
)
_RISK = frozenset({"serious_harm_level", "reoffending_score", "assessed_on"})
_OFFENCE = frozenset({"offence_type", "offence_date"})
_SCHEMES = frozenset({"pnc", "crn", "nomis"})
_AREAS = frozenset(AREAS)
_COHORTS = frozenset(COHORTS)
_PATHWAYS = frozenset(PATHWAYS)
_HARM = frozenset(SERIOUS_HARM_LEVELS)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EARLIEST_BIRTH = date(1900, 1, 1)
_EARLIEST_EVENT = date(2000, 1, 1)


class _Unsure(Exception):
    """Leave this batch to the schema."""


@dataclass(frozen=True)
class BatchRules:
    """The schema's limits and vocabularies, passed in by `schemas.caseload` (which imports
    this module, so this one cannot import it)."""

    max_batch: int
    max_offences: int
    local_case_id: re.Pattern[str]
    unstorable: re.Pattern[str]
    statuses: frozenset[str]
    need_levels: frozenset[str]
    genders: frozenset[str]
    offence_types: frozenset[str]


def load_batch(data: Any, rules: BatchRules) -> dict[str, Any] | None:
    """The batch as `CaseloadSyncSchema().load` returns it, or None to let the schema decide."""
    try:
        return _Loader(rules).batch(data)
    except _Unsure:
        return None


class _Loader:
    def __init__(self, rules: BatchRules) -> None:
        self.rules = rules
        self.today = datetime.now(UTC).date()

    def batch(self, data: Any) -> dict[str, Any]:
        if type(data) is not dict or not data.keys() <= _TOP:
            raise _Unsure
        mode = data.get("mode", "upsert")
        if mode not in ("upsert", "snapshot") or type(mode) is not str:
            raise _Unsure
        out: dict[str, Any] = {
            "mode": mode,
            "atomic": _flag(data.get("atomic", False)),
            "confirm_end": _flag(data.get("confirm_end", False)),
        }
        if "snapshot_id" in data:
            value = data["snapshot_id"]
            if type(value) is not str or mode == "snapshot":
                raise _Unsure
            try:
                out["snapshot_id"] = uuid.UUID(value)
            except ValueError:
                raise _Unsure from None
        records = data.get("records")
        if type(records) is not list or not 1 <= len(records) <= self.rules.max_batch:
            raise _Unsure
        loaded = [self.record(r) for r in records]
        if len({r["local_case_id"] for r in loaded}) != len(loaded):
            raise _Unsure
        out["records"] = loaded
        return out

    def record(self, data: Any) -> dict[str, Any]:
        if type(data) is not dict or not data.keys() <= _RECORD:
            raise _Unsure
        for name in _REQUIRED:
            if name not in data:
                raise _Unsure
        today = self.today
        local_id = data["local_case_id"]
        if type(local_id) is not str or self.rules.local_case_id.match(local_id) is None:
            raise _Unsure
        out: dict[str, Any] = {
            "local_case_id": local_id,
            "identifiers": _identifiers(data["identifiers"]),
            "given_name": self.text(data["given_name"], 100),
            "family_name": self.text(data["family_name"], 100),
            "date_of_birth": _date(data["date_of_birth"], _EARLIEST_BIRTH, today),
            "area": _member(data["area"], _AREAS),
            "statutory": _flag(data["statutory"]),
            "status": _member(data.get("status", "active"), self.rules.statuses),
        }
        if "gender" in data:
            out["gender"] = _member(data["gender"], self.rules.genders)
        if "offender_manager_ref" in data:
            ref = data["offender_manager_ref"]
            out["offender_manager_ref"] = None if ref is None else self.text(ref, 64)
        start = None
        if "start_date" in data:
            start = out["start_date"] = _date(data["start_date"], _EARLIEST_EVENT, today)
        if "end_date" in data:
            if out["status"] == "active":
                raise _Unsure
            end = out["end_date"] = _date(data["end_date"], _EARLIEST_EVENT, today)
            if start is not None and end < start:
                raise _Unsure
        if "risk" in data:
            out["risk"] = None if data["risk"] is None else _risk(data["risk"], today)
        if "needs" in data:
            out["needs"] = self.needs(data["needs"])
        if "cohorts" in data:
            cohorts = data["cohorts"]
            if type(cohorts) is not list or len(cohorts) > len(_COHORTS):
                raise _Unsure
            for cohort in cohorts:
                _member(cohort, _COHORTS)
            if len(set(cohorts)) != len(cohorts):
                raise _Unsure
            out["cohorts"] = list(cohorts)
        if "offences" in data:
            out["offences"] = self.offences(data["offences"], today)
        return out

    def text(self, value: Any, longest: int) -> str:
        if type(value) is not str or not 1 <= len(value) <= longest:
            raise _Unsure
        if self.rules.unstorable.search(value):
            raise _Unsure
        return value

    def needs(self, value: Any) -> dict[str, str]:
        if type(value) is not dict:
            raise _Unsure
        for pathway, level in value.items():
            _member(pathway, _PATHWAYS)
            _member(level, self.rules.need_levels)
        return dict(value)

    def offences(self, value: Any, today: date) -> list[dict[str, Any]]:
        if type(value) is not list or len(value) > self.rules.max_offences:
            raise _Unsure
        out = []
        for offence in value:
            if type(offence) is not dict or offence.keys() != _OFFENCE:
                raise _Unsure
            out.append(
                {
                    "offence_type": _member(offence["offence_type"], self.rules.offence_types),
                    "offence_date": _date(offence["offence_date"], _EARLIEST_EVENT, today),
                }
            )
        return out


def _flag(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _Unsure


def _member(value: Any, allowed: frozenset[str]) -> str:
    if type(value) is not str or value not in allowed:
        raise _Unsure
    return value


def _date(value: Any, earliest: date, latest: date) -> date:
    """Only YYYY-MM-DD (the schema takes other ISO spellings too; they are rare)."""
    if type(value) is not str or len(value) != 10 or _ISO_DATE.fullmatch(value) is None:
        raise _Unsure
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise _Unsure from None
    if not earliest <= day <= latest:
        raise _Unsure
    return day


def _identifiers(value: Any) -> dict[str, str]:
    if type(value) is not dict or not value or not value.keys() <= _SCHEMES:
        raise _Unsure
    out = {}
    for scheme, raw in value.items():
        if type(raw) is not str or not 1 <= len(raw) <= 20:
            raise _Unsure
        try:
            out[scheme] = normalise_identifier(scheme, raw)
        except IdentifierError:
            raise _Unsure from None
    return out


def _risk(value: Any, today: date) -> dict[str, Any]:
    if type(value) is not dict or not value.keys() <= _RISK or "assessed_on" not in value:
        raise _Unsure
    out: dict[str, Any] = {"assessed_on": _date(value["assessed_on"], _EARLIEST_EVENT, today)}
    if "serious_harm_level" in value:
        level = value["serious_harm_level"]
        out["serious_harm_level"] = None if level is None else _member(level, _HARM)
    if "reoffending_score" in value:
        score = value["reoffending_score"]
        if score is not None and (type(score) is not int or not 0 <= score <= 100):
            raise _Unsure
        out["reoffending_score"] = score
    if out.get("serious_harm_level") is None and out.get("reoffending_score") is None:
        raise _Unsure
    return out
