"""webhooks and reminders: endpoints, the outbox of their events, follow-up reminders

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailseen.storage.models import UTCDateTime

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('mailbox_id', BigId, nullable=True),
        sa.Column('events', sa.Text(), nullable=False),
        sa.Column('every_view', sa.Boolean(), nullable=False),
        sa.Column('format', sa.String(10), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('secret_enc', sa.Text(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('disabled_at', UTCDateTime(), nullable=True),
        sa.Column('disabled_reason', sa.Text(), nullable=False),
        sa.Column('failing_since', UTCDateTime(), nullable=True),
        sa.Column('last_success_at', UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], ondelete='CASCADE',
                                name=op.f('fk_webhook_endpoints_mailbox_id_mailboxes')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints')),
    )
    op.create_table(
        'webhook_outbox',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('endpoint_id', BigId, nullable=False),
        sa.Column('event', sa.String(40), nullable=False),
        sa.Column('event_id', sa.String(40), nullable=False),
        sa.Column('copy_id', BigId, nullable=True),
        sa.Column('facts_json', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('queued_at', UTCDateTime(), nullable=False),
        sa.Column('status', sa.String(10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', UTCDateTime(), nullable=True),
        sa.Column('lease_until', UTCDateTime(), nullable=True),
        sa.Column('last_attempt_at', UTCDateTime(), nullable=True),
        sa.Column('response_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ondelete='CASCADE',
                                name=op.f('fk_webhook_outbox_endpoint_id_webhook_endpoints')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_outbox')),
    )
    op.create_index('ix_webhook_outbox_due', 'webhook_outbox', ['status', 'next_attempt_at'])
    op.create_index('ix_webhook_outbox_endpoint', 'webhook_outbox', ['endpoint_id', 'id'])
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.add_column(sa.Column('remind_not_viewed_days', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('remind_not_replied_days', sa.Integer(), nullable=True))
    with op.batch_alter_table('users') as batch_op:
        batch_op.add_column(sa.Column('notify', sa.String(12), nullable=False,
                                      server_default='off'))
        batch_op.add_column(sa.Column('notified_until', UTCDateTime(), nullable=True))
    op.create_table(
        'reminders',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('message_id', BigId, nullable=False),
        sa.Column('kind', sa.String(12), nullable=False),
        sa.Column('due_at', UTCDateTime(), nullable=False),
        sa.Column('state', sa.String(10), nullable=False),
        sa.Column('user_id', BigId, nullable=True),
        sa.Column('fired_at', UTCDateTime(), nullable=True),
        sa.Column('notified_at', UTCDateTime(), nullable=True),
        sa.Column('notify_attempts', sa.Integer(), nullable=False),
        sa.Column('notify_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE',
                                name=op.f('fk_reminders_message_id_messages')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='SET NULL',
                                name=op.f('fk_reminders_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reminders')),
    )
    op.create_index('ix_reminders_message_id', 'reminders', ['message_id'])
    op.create_index('ix_reminders_due', 'reminders', ['state', 'due_at'])


def downgrade() -> None:
    op.drop_index('ix_reminders_due', table_name='reminders')
    op.drop_index('ix_reminders_message_id', table_name='reminders')
    op.drop_table('reminders')
    with op.batch_alter_table('users') as batch_op:
        batch_op.drop_column('notified_until')
        batch_op.drop_column('notify')
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.drop_column('remind_not_replied_days')
        batch_op.drop_column('remind_not_viewed_days')
    op.drop_index('ix_webhook_outbox_endpoint', table_name='webhook_outbox')
    op.drop_index('ix_webhook_outbox_due', table_name='webhook_outbox')
    op.drop_table('webhook_outbox')
    op.drop_table('webhook_endpoints')
