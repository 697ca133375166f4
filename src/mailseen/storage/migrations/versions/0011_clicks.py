"""clicks: click tracking setting per mailbox, per message, and the click events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailseen.storage.models import UTCDateTime

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.add_column(sa.Column('click_tracking', sa.String(10), nullable=False,
                                      server_default='global'))
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(sa.Column('clicks_tracked', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table(
        'click_events',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('message_id', BigId, nullable=False),
        sa.Column('copy_id', BigId, nullable=True),
        sa.Column('recipient', sa.Integer(), nullable=False),
        sa.Column('link', sa.Integer(), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('method', sa.String(10), nullable=False),
        sa.Column('ip', sa.String(45), nullable=True),
        sa.Column('user_agent', sa.Text(), nullable=True),
        sa.Column('headers_json', sa.Text(), nullable=False),
        sa.Column('verdict', sa.String(7), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('client', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE',
                                name=op.f('fk_click_events_message_id_messages')),
        sa.ForeignKeyConstraint(['copy_id'], ['copies.id'], ondelete='CASCADE',
                                name=op.f('fk_click_events_copy_id_copies')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_click_events')),
    )
    op.create_index('ix_click_events_message', 'click_events', ['message_id', 'id'])
    op.create_index('ix_click_events_copy', 'click_events', ['copy_id', 'at'])


def downgrade() -> None:
    op.drop_index('ix_click_events_copy', table_name='click_events')
    op.drop_index('ix_click_events_message', table_name='click_events')
    op.drop_table('click_events')
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_column('clicks_tracked')
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.drop_column('click_tracking')
