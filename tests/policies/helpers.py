"""Building small agreements in tests through the real loader, so they obey every rule."""

from __future__ import annotations

from typing import Any

from policies.agreements import agreement_from_document
from policies.model import Agreement
from policies.vocabulary import DEMO_AGENCIES


def grant(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "g1",
        "recipients": ["WMP"],
        "purposes": ["testing"],
        "resource": "subject",
        "actions": ["read"],
        "fields": ["ref"],
        "level": "identified",
    }
    return {**base, **overrides}


def agreement(*grants: dict[str, Any], **overrides: Any) -> Agreement:
    recipients = {r for g in grants for r in g["recipients"] if not r.startswith("kind:")}
    parties = sorted(recipients | {"WMP", "NPS"})
    document: dict[str, Any] = {
        "id": "test-isa",
        "version": 1,
        "title": "Test agreement",
        "parties": [{"agency": code, "role": "joint_controller"} for code in parties],
        "purposes": [{"code": "testing", "description": "Tests."}],
        "lawful_basis": ["UK GDPR Art 6(1)(e)"],
        "valid_from": "2015-02-01",
        "valid_until": "2027-03-31",
        "review_by": "2026-09-30",
        "retention": "P1Y",
        "grants": list(grants),
    }
    document.update(overrides)
    return agreement_from_document(document, DEMO_AGENCIES, source="test")
