"""caseload snapshots and cohort flag sources

Snapshots that span many batches (a session per snapshot, and the local case ids it has
seen), and which agency's caseload sync set a cohort flag (so only that agency's sync ends it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 06:09:34.591798
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COHORT_SOURCE_FK = "fk_cohort_memberships_set_by_agency_id_agencies"


def upgrade() -> None:
    op.create_table(
        "caseload_snapshots",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'completed', 'abandoned', 'expired')",
            name="caseload_snapshot_status",
        ),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("caseload_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_caseload_snapshots_agency_id"), ["agency_id"], unique=False
        )

    op.create_table(
        "caseload_snapshot_cases",
        sa.Column("snapshot_id", sa.String(length=36), nullable=False),
        sa.Column("local_case_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["caseload_snapshots.id"]),
        sa.PrimaryKeyConstraint("snapshot_id", "local_case_id"),
    )
    with op.batch_alter_table("cohort_memberships", schema=None) as batch_op:
        batch_op.add_column(sa.Column("set_by_agency_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(COHORT_SOURCE_FK, "agencies", ["set_by_agency_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("cohort_memberships", schema=None) as batch_op:
        batch_op.drop_constraint(COHORT_SOURCE_FK, type_="foreignkey")
        batch_op.drop_column("set_by_agency_id")

    op.drop_table("caseload_snapshot_cases")
    with op.batch_alter_table("caseload_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_caseload_snapshots_agency_id"))

    op.drop_table("caseload_snapshots")
