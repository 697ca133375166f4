"""view events indexed by message, then id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 19:55:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A message's latest machine fetch (the listing's eye) is read newest first and the scan
    # stops at the first one; on (message_id) alone PostgreSQL read and sorted every fetch
    # of the message. SQLite's index already ended with the rowid: same order, same size.
    with op.batch_alter_table('view_events', schema=None) as batch_op:
        batch_op.create_index('ix_view_events_message', ['message_id', 'id'], unique=False)
        batch_op.drop_index(batch_op.f('ix_view_events_message_id'))


def downgrade() -> None:
    with op.batch_alter_table('view_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_view_events_message_id'), ['message_id'],
                              unique=False)
        batch_op.drop_index('ix_view_events_message')
