"""LMTP intake: the envelope a mail was delivered with (MAIL FROM, RCPT TO, the client's address)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00.000000

Three nullable columns on inbound_mail; NULL for mail fetched from IMAP or a Maildir, which has no envelope. They
are added in place (no table copy on SQLite), so the full-text triggers of 0004 stay as they are.
"""
from alembic import op
import sqlalchemy as sa
import store.types


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('inbound_mail', sa.Column('envelope_from', store.types.SafeText(), nullable=True))
    op.add_column('inbound_mail', sa.Column('envelope_to', sa.JSON(), nullable=True))
    op.add_column('inbound_mail', sa.Column('client_address', store.types.SafeText(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inbound_mail', schema=None) as batch_op:
        batch_op.drop_column('client_address')
        batch_op.drop_column('envelope_to')
        batch_op.drop_column('envelope_from')
