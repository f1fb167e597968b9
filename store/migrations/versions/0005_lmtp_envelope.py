"""LMTP intake and reconciliation: the envelope a mail was delivered with, and each mailbox's last reconciliation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00.000000

Three nullable columns on inbound_mail; NULL for mail fetched from IMAP or a Maildir, which has no envelope. They
are added in place (no table copy on SQLite), so the full-text triggers of 0004 stay as they are.
reconcile_result keeps what `kcc-mail reconcile` found last per mailbox, for `kcc-mail status`; reconcile_digest
the sha256 of each server mail it had to fetch, so a UID's content is fetched once.
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
    op.create_table('reconcile_result',
    sa.Column('mailbox', store.types.SafeString(length=100), nullable=False),
    sa.Column('ran_at', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lost', sa.Integer(), nullable=False),
    sa.Column('summary', store.types.SafeText(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.CheckConstraint('length(mailbox) <= 100', name=op.f('ck_reconcile_result_mailbox_len')),
    sa.PrimaryKeyConstraint('mailbox', name=op.f('pk_reconcile_result'))
    )
    op.create_table('reconcile_digest',
    sa.Column('mailbox', store.types.SafeString(length=100), nullable=False),
    sa.Column('folder', store.types.SafeString(length=255), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('uid', sa.BigInteger(), nullable=False),
    sa.Column('sha256', store.types.SafeString(length=64), nullable=False),
    sa.CheckConstraint('length(folder) <= 255', name=op.f('ck_reconcile_digest_folder_len')),
    sa.CheckConstraint('length(mailbox) <= 100', name=op.f('ck_reconcile_digest_mailbox_len')),
    sa.CheckConstraint('length(sha256) <= 64', name=op.f('ck_reconcile_digest_sha256_len')),
    sa.PrimaryKeyConstraint('mailbox', 'folder', 'uidvalidity', 'uid', name=op.f('pk_reconcile_digest'))
    )


def downgrade() -> None:
    op.drop_table('reconcile_digest')
    op.drop_table('reconcile_result')
    with op.batch_alter_table('inbound_mail', schema=None) as batch_op:
        batch_op.drop_column('client_address')
        batch_op.drop_column('envelope_to')
        batch_op.drop_column('envelope_from')
