"""Review and expiry status of an agreement, for `agreements list` and the IG auditor.

ISAs must be reviewed before they lapse; the CLI shows how long is left so that an agreement
does not expire silently and turn every request under it into a denial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from policies.model import Agreement

REVIEW_DUE_DAYS = 60  # "review due" this many days ahead of review_by


@dataclass(frozen=True)
class ReviewStatus:
    agreement: str
    days_to_review: int
    days_to_expiry: int
    review_overdue: bool
    expired: bool
    not_yet_valid: bool

    @property
    def state(self) -> str:
        """One word for sorting and colouring: expired, not-yet-valid, overdue, due, ok."""
        if self.expired:
            return "expired"
        if self.not_yet_valid:
            return "not-yet-valid"
        if self.review_overdue:
            return "overdue"
        return "due" if self.days_to_review <= REVIEW_DUE_DAYS else "ok"

    def __str__(self) -> str:
        if self.expired:
            return f"EXPIRED {-self.days_to_expiry} days ago"
        review = (
            f"REVIEW OVERDUE by {-self.days_to_review} days"
            if self.review_overdue
            else f"review in {self.days_to_review} days"
        )
        prefix = "NOT YET VALID; " if self.not_yet_valid else ""
        return f"{prefix}{review}; expires in {self.days_to_expiry} days"


def review_status(agreement: Agreement, today: date) -> ReviewStatus:
    return ReviewStatus(
        agreement=agreement.label,
        days_to_review=(agreement.review_by - today).days,
        days_to_expiry=(agreement.valid_until - today).days,
        review_overdue=today > agreement.review_by,
        expired=today > agreement.valid_until,
        not_yet_valid=today < agreement.valid_from,
    )


def render_review_table(agreements: list[Agreement], today: date) -> str:
    """Fixed-width table, soonest deadline first, for terminals and e-mailed reports."""
    rows = sorted(
        ((review_status(a, today), a) for a in agreements),
        key=lambda pair: (pair[0].days_to_review, pair[1].id),
    )
    header = f"{'AGREEMENT':<32} {'REVIEW BY':<10} {'UNTIL':<10} {'STATE':<13} STATUS"
    lines = [header]
    for status, a in rows:
        lines.append(
            f"{a.label:<32} {a.review_by.isoformat():<10} {a.valid_until.isoformat():<10} "
            f"{status.state:<13} {status}"
        )
    return "\n".join(lines)
