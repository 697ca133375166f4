"""splice: what tagging a stored message for its copies changes, kept beside it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 23:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('message_data') as batch_op:
        batch_op.add_column(sa.Column('splice_start', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('splice_end', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('splice_insert', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('splice_key', sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('message_data') as batch_op:
        batch_op.drop_column('splice_key')
        batch_op.drop_column('splice_insert')
        batch_op.drop_column('splice_end')
        batch_op.drop_column('splice_start')
