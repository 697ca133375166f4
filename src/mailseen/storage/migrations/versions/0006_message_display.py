"""message_display: messages sanitised once, not on every view

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 14:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty at first: each message gets its row when it is received or first shown.
    op.create_table(
        'message_display',
        sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('html', sa.Text(), nullable=True),
        sa.Column('html_images', sa.Text(), nullable=True),
        sa.Column('text', sa.Text(), nullable=True),
        sa.Column('blocked_images', sa.Integer(), nullable=False),
        sa.Column('attachments_json', sa.Text(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'],
                                name=op.f('fk_message_display_message_id_messages'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_message_display')),
    )


def downgrade() -> None:
    op.drop_table('message_display')
