"""copies: one per recipient of a tracked message, each with its own pixel and delivery

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailseen.storage.models import UTCDateTime

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_SUMMARY = ('status, attempts, last_error, next_attempt_at, lease_until, sent_at, view_count, '
            'first_viewed_at, last_viewed_at, machine_count, first_machine_at, last_machine_at, '
            'replied_at')


def upgrade() -> None:
    op.create_table(
        'copies',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('message_id', BigId, nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('recipient', sa.Text(), nullable=True),
        sa.Column('token_key', sa.BigInteger(), nullable=True),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('next_attempt_at', UTCDateTime(), nullable=True),
        sa.Column('lease_until', UTCDateTime(), nullable=True),
        sa.Column('sent_at', UTCDateTime(), nullable=True),
        sa.Column('last_attempt_at', UTCDateTime(), nullable=True),
        sa.Column('view_count', sa.Integer(), nullable=False),
        sa.Column('first_viewed_at', UTCDateTime(), nullable=True),
        sa.Column('last_viewed_at', UTCDateTime(), nullable=True),
        sa.Column('machine_count', sa.Integer(), nullable=False),
        sa.Column('first_machine_at', UTCDateTime(), nullable=True),
        sa.Column('last_machine_at', UTCDateTime(), nullable=True),
        sa.Column('replied_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'],
                                name=op.f('fk_copies_message_id_messages'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_copies')),
        sa.UniqueConstraint('token_key', name=op.f('uq_copies_token_key')),
    )
    op.create_index('uq_copies_message_position', 'copies', ['message_id', 'position'],
                    unique=True)
    op.create_index('ix_copies_queue', 'copies', ['status', 'next_attempt_at'])
    op.create_index('ix_copies_attempted', 'copies', ['last_attempt_at'])
    with op.batch_alter_table('messages') as batch_op:
        for name in ('copies', 'viewed_copies', 'failed_copies'):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False,
                                          server_default='0'))
    with op.batch_alter_table('view_events') as batch_op:
        batch_op.add_column(sa.Column('copy_id', BigId, nullable=True))
        batch_op.create_foreign_key(op.f('fk_view_events_copy_id_copies'), 'copies',
                                    ['copy_id'], ['id'], ondelete='CASCADE')
    # Every message sent so far left as one copy for all its recipients: its pixel (a token
    # naming the message) is that copy's, shared by them.
    op.execute(f"INSERT INTO copies (message_id, position, recipient, token_key, {_SUMMARY}) "
               f"SELECT id, 0, NULL, NULL, {_SUMMARY} FROM messages "
               "WHERE direction = 'out'")
    op.execute("UPDATE messages SET failed_copies = 1 WHERE direction = 'out' "
               "AND status = 'failed'")
    op.execute("UPDATE view_events SET copy_id = (SELECT c.id FROM copies c WHERE "
               "c.message_id = view_events.message_id AND c.position = 0)")


def downgrade() -> None:
    with op.batch_alter_table('view_events') as batch_op:
        batch_op.drop_constraint(op.f('fk_view_events_copy_id_copies'), type_='foreignkey')
        batch_op.drop_column('copy_id')
    with op.batch_alter_table('messages') as batch_op:
        for name in ('copies', 'viewed_copies', 'failed_copies'):
            batch_op.drop_column(name)
    op.drop_index('ix_copies_attempted', table_name='copies')
    op.drop_index('ix_copies_queue', table_name='copies')
    op.drop_index('uq_copies_message_position', table_name='copies')
    op.drop_table('copies')
