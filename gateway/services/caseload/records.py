"""The normalised form of one submitted record (its hash, its bands): pure functions of the
record, kept off the database so what makes two records "the same" is read in one place."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, time
from typing import Any

import orjson

# Bump when the normalised form or its encoding changes: every case re-applies once.
# 2: encoded by orjson (UTF-8, not \u escapes); 3: re-applied once to record each case's
# cohort flags (`Management.cohorts`), which restores a flag lost while only its hash was kept.
HASH_VERSION = "caseload/3"


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the normalised record: same case content, same hash, however it was spelt.

    Identifiers arrive normalised from the schema; lists whose order carries no meaning are
    sorted here, and absent optional fields hash like their defaults."""
    normal = {
        **record,
        "cohorts": sorted(record.get("cohorts") or ()),
        "needs": record.get("needs") or {},
        "offences": sorted(
            (o["offence_type"], o["offence_date"].isoformat()) for o in record.get("offences") or ()
        ),
        "risk": record.get("risk") or None,
    }
    # orjson: compact, sorted keys, dates as ISO strings; several times the stdlib's speed,
    # which a batch of 1,000 records notices.
    return hashlib.sha256(
        orjson.dumps([HASH_VERSION, normal], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def reoffending_band(score: int) -> str:
    """The police risk-matrix bands (as the demo data and partners' systems use them)."""
    if score < 25:
        return "low"
    if score < 50:
        return "medium"
    if score < 75:
        return "high"
    return "very_high"


def _strong_identifiers(record: dict[str, Any]) -> dict[str, str]:
    return {scheme.upper(): value for scheme, value in record["identifiers"].items()}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
