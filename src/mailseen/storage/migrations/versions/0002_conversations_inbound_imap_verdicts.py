"""Conversations, inbound mail, IMAP accounts, and verdicts on view events.

New NOT NULL columns get server defaults so existing rows stay valid.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:10:32.642885
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailseen.storage.models

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('conversations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('mailbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('other_party', sa.Text(), nullable=False),
    sa.Column('created_at', mailseen.storage.models.UTCDateTime(), nullable=False),
    sa.Column('last_activity_at', mailseen.storage.models.UTCDateTime(), nullable=False),
    sa.Column('latest_sent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_conversations_mailbox_id_mailboxes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations'))
    )
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index('ix_conversations_listing', ['mailbox_id', 'last_activity_at'], unique=False)

    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('imap_host', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('imap_port', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('imap_tls', sa.String(length=10), nullable=False, server_default='implicit'))
        batch_op.add_column(sa.Column('imap_username', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('imap_password_enc', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('imap_folder', sa.String(length=200), nullable=False, server_default='INBOX'))
        batch_op.add_column(sa.Column('imap_uidvalidity', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('imap_last_uid', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('imap_status', sa.String(length=20), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('imap_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('imap_checked_at', mailseen.storage.models.UTCDateTime(), nullable=True))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('machine_count', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('first_machine_at', mailseen.storage.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_machine_at', mailseen.storage.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('replied_at', mailseen.storage.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('direction', sa.String(length=3), nullable=False, server_default='out'))
        batch_op.add_column(sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('automatic', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('auto_reason', sa.Text(), nullable=False, server_default=''))
        batch_op.create_index(batch_op.f('ix_messages_conversation_id'), ['conversation_id'], unique=False)
        batch_op.create_index('uq_messages_inbound', ['mailbox_id', 'message_id'], unique=True, sqlite_where=sa.text("direction = 'in'"), postgresql_where=sa.text("direction = 'in'"))
        batch_op.create_foreign_key(batch_op.f('fk_messages_conversation_id_conversations'), 'conversations', ['conversation_id'], ['id'])

    with op.batch_alter_table('view_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('verdict', sa.String(length=7), nullable=False, server_default='human'))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('client', sa.Text(), nullable=False, server_default=''))



def downgrade() -> None:
    with op.batch_alter_table('view_events', schema=None) as batch_op:
        batch_op.drop_column('client')
        batch_op.drop_column('reason')
        batch_op.drop_column('verdict')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_messages_conversation_id_conversations'), type_='foreignkey')
        batch_op.drop_index('uq_messages_inbound', sqlite_where=sa.text("direction = 'in'"), postgresql_where=sa.text("direction = 'in'"))
        batch_op.drop_index(batch_op.f('ix_messages_conversation_id'))
        batch_op.drop_column('auto_reason')
        batch_op.drop_column('automatic')
        batch_op.drop_column('conversation_id')
        batch_op.drop_column('direction')
        batch_op.drop_column('replied_at')
        batch_op.drop_column('last_machine_at')
        batch_op.drop_column('first_machine_at')
        batch_op.drop_column('machine_count')

    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('imap_checked_at')
        batch_op.drop_column('imap_error')
        batch_op.drop_column('imap_status')
        batch_op.drop_column('imap_last_uid')
        batch_op.drop_column('imap_uidvalidity')
        batch_op.drop_column('imap_folder')
        batch_op.drop_column('imap_password_enc')
        batch_op.drop_column('imap_username')
        batch_op.drop_column('imap_tls')
        batch_op.drop_column('imap_port')
        batch_op.drop_column('imap_host')

    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index('ix_conversations_listing')

    op.drop_table('conversations')
