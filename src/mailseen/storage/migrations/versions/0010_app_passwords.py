"""app_passwords: what users give their mail clients for SMTP submission; mailboxes:
aliases, and the Sent folder the IMAP poller reads

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'app_passwords',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_app_passwords_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_app_passwords')),
        sa.UniqueConstraint('secret_hash', name=op.f('uq_app_passwords_secret_hash')),
    )
    op.create_index(op.f('ix_app_passwords_user_id'), 'app_passwords', ['user_id'],
                    unique=False)
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.add_column(sa.Column('aliases', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('imap_sent_folder', sa.Text(), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('imap_sent_uidvalidity', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('imap_sent_last_uid', sa.BigInteger(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('imap_sent_append', sa.Boolean(), nullable=False,
                                      server_default=sa.text('false')))


def downgrade() -> None:
    with op.batch_alter_table('mailboxes') as batch_op:
        batch_op.drop_column('imap_sent_append')
        batch_op.drop_column('imap_sent_last_uid')
        batch_op.drop_column('imap_sent_uidvalidity')
        batch_op.drop_column('imap_sent_folder')
        batch_op.drop_column('aliases')
    op.drop_index(op.f('ix_app_passwords_user_id'), table_name='app_passwords')
    op.drop_table('app_passwords')
