"""messages.sent_by: who sent each message; message_words: body words for search

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty at first: messages stored before keep being found by subject and addresses.
    op.create_table(
        'message_words',
        sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('words', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'],
                                name=op.f('fk_message_words_message_id_messages'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_message_words')),
    )
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(sa.Column('sent_by', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column(
            'sent_by_user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
            nullable=True))
        batch_op.create_foreign_key(op.f('fk_messages_sent_by_user_id_users'), 'users',
                                    ['sent_by_user_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    op.drop_table('message_words')
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_constraint(op.f('fk_messages_sent_by_user_id_users'), type_='foreignkey')
        batch_op.drop_column('sent_by_user_id')
        batch_op.drop_column('sent_by')
