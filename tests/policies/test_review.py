"""Review and expiry status for `agreements list`."""

from __future__ import annotations

from datetime import date

from policies.model import Agreement
from policies.review import render_review_table, review_status


def by_id(agreements: list[Agreement], agreement_id: str) -> Agreement:
    return next(a for a in agreements if a.id == agreement_id)


def test_days_to_review_and_expiry(demo_agreements: list[Agreement]) -> None:
    core = by_id(demo_agreements, "core-iom")  # review 2026-09-30, until 2027-03-31
    status = review_status(core, date(2026, 9, 20))
    assert (status.days_to_review, status.days_to_expiry) == (10, 192)
    assert not status.review_overdue and status.state == "due"
    assert str(status) == "review in 10 days; expires in 192 days"
    assert review_status(core, date(2025, 1, 1)).state == "ok"


def test_overdue_review(demo_agreements: list[Agreement]) -> None:
    status = review_status(by_id(demo_agreements, "core-iom"), date(2026, 10, 5))
    assert status.review_overdue and status.state == "overdue"
    assert str(status).startswith("REVIEW OVERDUE by 5 days")


def test_expired_and_not_yet_valid(demo_agreements: list[Agreement]) -> None:
    legacy = review_status(by_id(demo_agreements, "legacy-probation-trust"), date(2015, 2, 10))
    assert legacy.expired and legacy.state == "expired"
    assert str(legacy) == "EXPIRED 10 days ago"
    early = review_status(by_id(demo_agreements, "core-iom"), date(2015, 1, 1))
    assert early.not_yet_valid and early.state == "not-yet-valid"


def test_table_lists_soonest_deadline_first(demo_agreements: list[Agreement]) -> None:
    table = render_review_table(demo_agreements, date(2025, 6, 1)).splitlines()
    assert table[0].startswith("AGREEMENT")
    assert table[1].startswith("legacy-probation-trust@3")
    assert len(table) == 1 + len(demo_agreements)
