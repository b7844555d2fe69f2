"""the cohort flags each case's last synced record listed

A cohort flag is held while any agency's current records list it, and an agency ends a flag
its sync set only once none of its records lists it. Only the record's hash was kept, so a
case left out of a batch (or unchanged in it) could not say whether it still lists a flag.
NULL: not known (a case synced before this, ended by a snapshot, or not from caseload sync).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("management", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cohorts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("management", schema=None) as batch_op:
        batch_op.drop_column("cohorts")
