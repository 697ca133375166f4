"""privacy: tracking policy, consent records, do-not-track list, settings audit log

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailseen.storage.models import UTCDateTime

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.add_column(sa.Column('tracking_policy', sa.String(16), nullable=False,
                                      server_default='global'))
        batch_op.add_column(sa.Column('refusal_line', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('refusal_text', sa.Text(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('language', sa.String(8), nullable=False,
                                      server_default='en'))
        batch_op.add_column(sa.Column('privacy_url', sa.Text(), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('copies') as batch_op:
        batch_op.add_column(sa.Column('pixel', sa.String(10), nullable=False,
                                      server_default='none'))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('recipient_key', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('envelope_json', sa.Text(), nullable=True))
    # Copies sent before: a token means a pixel of the copy's own (or, with no recipient,
    # one shared by the send). Their recipients' keys are lowercased here: the same as
    # core.consent.address_key for every ASCII domain.
    op.execute("UPDATE copies SET pixel = 'personal' WHERE token_key IS NOT NULL")
    op.execute("UPDATE copies SET recipient_key = lower(recipient) WHERE recipient IS NOT NULL")
    op.create_table(
        'consent_events',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('address_key', sa.String(320), nullable=False),
        sa.Column('state', sa.String(10), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('how', sa.String(10), nullable=False),
        sa.Column('by_user_id', BigId, nullable=True),
        sa.Column('by_name', sa.Text(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('prev_hash', sa.String(64), nullable=False),
        sa.Column('hash', sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(['by_user_id'], ['users.id'],
                                name=op.f('fk_consent_events_by_user_id_users'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consent_events')),
    )
    op.create_index(op.f('ix_consent_events_address_key'), 'consent_events', ['address_key'])
    op.create_table(
        'consents',
        sa.Column('address_key', sa.String(320), nullable=False),
        sa.Column('state', sa.String(10), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('event_id', BigId, nullable=False),
        sa.PrimaryKeyConstraint('address_key', name=op.f('pk_consents')),
    )
    op.create_table(
        'do_not_track',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('kind', sa.String(10), nullable=False),
        sa.Column('key', sa.String(320), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('created_by', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_do_not_track')),
    )
    op.create_index('uq_do_not_track_kind_key', 'do_not_track', ['kind', 'key'], unique=True)
    op.create_table(
        'settings_audit',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('user_id', BigId, nullable=True),
        sa.Column('user_name', sa.Text(), nullable=False),
        sa.Column('scope', sa.Text(), nullable=False),
        sa.Column('setting', sa.String(100), nullable=False),
        sa.Column('old', sa.Text(), nullable=False),
        sa.Column('new', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_settings_audit_user_id_users'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_settings_audit')),
    )
    op.create_index('ix_settings_audit_at', 'settings_audit', ['at'])


def downgrade() -> None:
    op.drop_table('settings_audit')
    op.drop_table('do_not_track')
    op.drop_table('consents')
    op.drop_table('consent_events')
    with op.batch_alter_table('copies') as batch_op:
        for name in ('envelope_json', 'recipient_key', 'reason', 'pixel'):
            batch_op.drop_column(name)
    with op.batch_alter_table('mailboxes') as batch_op:
        for name in ('privacy_url', 'language', 'refusal_text', 'refusal_line',
                     'tracking_policy'):
            batch_op.drop_column(name)
