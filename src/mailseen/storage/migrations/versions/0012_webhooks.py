"""webhooks: endpoints and the durable outbox of their events

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-04 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailseen.storage.models import UTCDateTime

revision: str = '0012'
down_revision: str | None = '0009'
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


def downgrade() -> None:
    op.drop_index('ix_webhook_outbox_endpoint', table_name='webhook_outbox')
    op.drop_index('ix_webhook_outbox_due', table_name='webhook_outbox')
    op.drop_table('webhook_outbox')
    op.drop_table('webhook_endpoints')
