"""drop the audit indexes no query uses

`resource_type` and `status` stay as columns (copies of the event body that `audit.dbverify`
checks), but no auditor filter or report selects by them, and each index cost every request
an index entry written in the audit transaction.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNQUERIED = ("resource_type", "status")


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for column in UNQUERIED:
            batch_op.drop_index(f"ix_audit_events_{column}_id")


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for column in UNQUERIED:
            batch_op.create_index(f"ix_audit_events_{column}_id", [column, "id"], unique=False)
