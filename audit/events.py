"""The audit event and its canonical byte form.

Why a canonical form: the Merkle leaf of an event is a hash over bytes, and anyone holding
an export must be able to recompute those bytes from the event alone, in any language. So
the encoding is fixed here, once:

* a JSON object holding every field of `AuditEvent` (absent values as ``null``);
* object keys sorted by their UTF-16 code units (identical to code-point order for the
  ASCII field names), no insignificant whitespace: separators ``","`` and ``":"``;
* strings as UTF-8, not ASCII-escaped; only ``"``, ``\\`` and control characters below
  U+0020 are escaped (``\\b \\f \\n \\r \\t``, otherwise ``\\u00xx`` in lower case);
  lone surrogates are rejected;
* numbers are integers only, within +-(2**53 - 1); floats are rejected anywhere;
* times are UTC with microseconds: ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

This is exactly RFC 8785 (JSON Canonicalization Scheme) restricted to data without
floats: for such data JCS output and this output are byte-identical, so a verifier may use
any JCS library. `canonical_json` encodes any such JSON value; `canonical_bytes` is the
encoding of one event.

Standard library only: ``audit.verify`` imports this module on auditors' machines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
_EVENT_ID = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")

DetailValue = str | int | bool | None | list[str | int | bool | None]


class EventKind(StrEnum):
    """What happened. Values are stored and hashed: never rename one, only add."""

    API_ACCESS = "api.access"
    TOKEN_ISSUED = "token.issued"
    TOKEN_REFUSED = "token.refused"
    TOKEN_REVOKED = "token.revoked"
    AGREEMENT_LOADED = "agreement.loaded"
    AGREEMENT_RETIRED = "agreement.retired"
    CLIENT_REGISTERED = "client.registered"
    CLIENT_REVOKED = "client.revoked"
    AGENCY_REGISTERED = "agency.registered"
    AGENCY_SUSPENDED = "agency.suspended"
    AGENCY_REINSTATED = "agency.reinstated"
    KEY_ROTATED = "key.rotated"


DECISIONS = ("permit", "deny")


class CanonicalFormError(ValueError):
    """Raised when a value has no canonical form (float, naive time, bad type...)."""


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One audited happening. Never holds personal data: subjects appear by internal UUID.

    Values are normalised on construction (UTC time, sorted de-duplicated subject ids and
    fields) so that two events meaning the same thing always encode to the same bytes.
    """

    kind: EventKind
    time: datetime
    decision: str
    event_id: str = field(default_factory=_new_event_id)
    request_id: str | None = None
    client_id: str | None = None
    agency: str | None = None
    on_behalf_of: str | None = None
    purpose: str | None = None
    method: str | None = None
    route: str | None = None
    action: str | None = None
    resource_type: str | None = None
    subject_ids: tuple[str, ...] = ()
    agreement: str | None = None
    grant: str | None = None
    disclosure_level: str | None = None
    fields: tuple[str, ...] = ()
    reason: str | None = None
    status: int | None = None
    duration_us: int | None = None
    details: dict[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        put = object.__setattr__
        try:
            put(self, "kind", EventKind(self.kind))
        except ValueError:
            raise CanonicalFormError(f"unknown event kind {self.kind!r}") from None
        put(self, "time", _utc(self.time))
        if self.decision not in DECISIONS:
            raise CanonicalFormError(f"decision must be permit or deny, not {self.decision!r}")
        if not isinstance(self.event_id, str) or not _EVENT_ID.fullmatch(self.event_id):
            raise CanonicalFormError("event_id must be 32 lower-case hex digits (uuid4().hex)")
        for name in _OPTIONAL_STRINGS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise CanonicalFormError(f"{name} must be a string or None")
            if value is not None:
                put(self, name, _plain(value))
        for name in ("status", "duration_us"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not _is_scalar(value)
                                      or not isinstance(value, int)):
                raise CanonicalFormError(f"{name} must be an integer or None")
            put(self, name, _plain(value))
        put(self, "subject_ids", _subject_ids(self.subject_ids))
        put(self, "fields", _sorted_strings("fields", self.fields))
        put(self, "details", _details(self.details))


_OPTIONAL_STRINGS = (
    "request_id", "client_id", "agency", "on_behalf_of", "purpose", "method", "route",
    "action", "resource_type", "agreement", "grant", "disclosure_level", "reason",
)
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(AuditEvent))


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise CanonicalFormError("time must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _subject_ids(values: Iterable[object]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise CanonicalFormError("subject_ids must be a sequence of UUIDs, not a string")
    try:
        # Parsing as UUID both normalises spelling and keeps names out of the log.
        return tuple(sorted({str(uuid.UUID(str(v))) for v in values}))
    except ValueError:
        raise CanonicalFormError("subject_ids must be internal subject UUIDs") from None


def _sorted_strings(name: str, values: Iterable[object]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise CanonicalFormError(f"{name} must be a sequence of strings, not a string")
    items = set(values)
    if not all(isinstance(v, str) for v in items):
        raise CanonicalFormError(f"{name} must be a sequence of strings")
    return tuple(sorted({_plain(v) for v in items}))  # type: ignore[arg-type]


def _details(details: Mapping[str, Any]) -> dict[str, DetailValue]:
    if not isinstance(details, Mapping):
        raise CanonicalFormError("details must be a mapping")
    out: dict[str, DetailValue] = {}
    for key, value in details.items():
        if not isinstance(key, str):
            raise CanonicalFormError("details keys must be strings")
        if isinstance(value, list | tuple):
            if not all(_is_scalar(v) for v in value):
                raise CanonicalFormError(f"details[{key!r}] may only list str/int/bool/None")
            value = [_plain(v) for v in value]
        elif not _is_scalar(value):
            raise CanonicalFormError(f"details[{key!r}] must be str, int, bool, None or list")
        out[_plain(key)] = _plain(value)
    return out


def _is_scalar(value: object) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and abs(value) <= MAX_SAFE_INTEGER


def _plain(value: Any) -> Any:
    """Enum members and other subclasses become the plain str/int/bool they stand for,
    so an event equals its own decoding."""
    if value is None or type(value) in (str, int, bool, list):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    return str.__str__(value)


def format_time(value: datetime) -> str:
    """The canonical time text; fixed width, so string order is time order."""
    return _utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of `format_time`; strict, so only canonical text decodes."""
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise CanonicalFormError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise CanonicalFormError(f"time {text!r} is not a valid date and time") from None


def event_to_dict(event: AuditEvent) -> dict[str, Any]:
    """The JSON-ready form of an event (what the canonical bytes encode)."""
    out: dict[str, Any] = {}
    for name in FIELD_NAMES:
        value = getattr(event, name)
        if name == "time":
            value = format_time(value)
        elif name == "kind":
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif name == "details":
            value = dict(value)
        out[name] = value
    return out


def event_from_dict(data: Mapping[str, Any]) -> AuditEvent:
    """Build an event from its JSON form; every field must be present, none unknown,
    so a verifier notices fields dropped from or added to an export."""
    if not isinstance(data, Mapping):
        raise CanonicalFormError("an event must be a JSON object")
    missing = set(FIELD_NAMES) - set(data)
    unknown = set(data) - set(FIELD_NAMES)
    if missing or unknown:
        raise CanonicalFormError(
            f"event fields: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    values = dict(data)
    values["time"] = parse_time(values["time"])
    for name in ("subject_ids", "fields"):
        if not isinstance(values[name], list):
            raise CanonicalFormError(f"{name} must be a list")
    return AuditEvent(**values)


def canonical_json(value: Any) -> bytes:
    """Encode a float-free JSON value in the JCS subset described in the module docstring."""
    try:
        text = json.dumps(_canonical_value(value), ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalFormError("strings must be valid Unicode (no lone surrogates)") from None


def _canonical_value(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalFormError(f"integer {value} is outside the exact JSON range")
        return value
    if kind is list or kind is tuple:
        return [_canonical_value(v) for v in value]
    if isinstance(value, Mapping):
        keys = list(value)
        if not all(type(k) is str for k in keys):
            raise CanonicalFormError("object keys must be strings")
        if all(k.isascii() for k in keys):
            keys.sort()
        else:  # JCS orders keys by UTF-16 code units, not code points
            keys.sort(key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        # json.dumps keeps this insertion order.
        return {k: _canonical_value(value[k]) for k in keys}
    if isinstance(value, float):
        raise CanonicalFormError("floats have no canonical form here")
    # Subclasses (StrEnum, IntEnum members...) encode as their plain values.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _canonical_value(int(value))
    if isinstance(value, str):
        return str.__str__(value)
    raise CanonicalFormError(f"{type(value).__name__} has no JSON form")


def canonical_bytes(event: AuditEvent) -> bytes:
    return canonical_json(event_to_dict(event))


def event_from_canonical(data: bytes) -> AuditEvent:
    """Decode canonical bytes; refuses anything that is not exactly canonical."""
    try:
        parsed = json.loads(data.decode("utf-8"), parse_float=_refuse_float,
                            parse_constant=_refuse_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CanonicalFormError(f"not JSON: {exc}") from None
    event = event_from_dict(parsed)
    if canonical_bytes(event) != data:
        raise CanonicalFormError("bytes are JSON but not the canonical form of the event")
    return event


def _refuse_float(text: str) -> Any:
    raise CanonicalFormError(f"floats have no canonical form here: {text}")


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || data); the prefix keeps leaves and nodes apart."""
    return hashlib.sha256(b"\x00" + data).digest()
