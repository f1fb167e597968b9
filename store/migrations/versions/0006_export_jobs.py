"""Export to the registers (issue 14): the export jobs each decision writes, and the local → remote map

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:31:47.190001

"""
from alembic import op
import sqlalchemy as sa
import store.types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('exported_record',
    sa.Column('local_uuid', sa.Uuid(), nullable=False),
    sa.Column('soort', store.types.SafeString(length=50), nullable=False),
    sa.Column('remote_uuid', store.types.SafeString(length=64), nullable=False),
    sa.Column('remote_url', store.types.SafeString(length=1000), nullable=False),
    sa.Column('body_sha256', store.types.SafeString(length=64), nullable=False),
    sa.Column('exported_at', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(body_sha256) <= 64', name=op.f('ck_exported_record_body_sha256_len')),
    sa.CheckConstraint('length(remote_url) <= 1000', name=op.f('ck_exported_record_remote_url_len')),
    sa.CheckConstraint('length(remote_uuid) <= 64', name=op.f('ck_exported_record_remote_uuid_len')),
    sa.CheckConstraint('length(soort) <= 50', name=op.f('ck_exported_record_soort_len')),
    sa.PrimaryKeyConstraint('local_uuid', name=op.f('pk_exported_record'))
    )
    op.create_table('export_job',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('klantcontact_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reden', store.types.SafeString(length=50), nullable=False),
    sa.Column('status', sa.Enum('pending', 'sending', 'retry', 'done', 'failed', name='status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_token', store.types.SafeString(length=64), nullable=False),
    sa.Column('lease_until', store.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_error', store.types.SafeText(), nullable=False),
    sa.Column('created_at', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', store.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('length(lease_token) <= 64', name=op.f('ck_export_job_lease_token_len')),
    sa.CheckConstraint('length(reden) <= 50', name=op.f('ck_export_job_reden_len')),
    sa.ForeignKeyConstraint(['klantcontact_id'], ['klantcontact.id'], name=op.f('fk_export_job_klantcontact_id_klantcontact')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_export_job'))
    )
    with op.batch_alter_table('export_job', schema=None) as batch_op:
        batch_op.create_index('ix_export_job_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_export_job_klantcontact_id'), ['klantcontact_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('export_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_export_job_klantcontact_id'))
        batch_op.drop_index('ix_export_job_due')

    op.drop_table('export_job')
    op.drop_table('exported_record')
