"""service heartbeat

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000

One row per running service process, renewed every few seconds, so `kcc-mail status` can tell a dead service
from an idle one.
"""
from alembic import op
import sqlalchemy as sa
import store.types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('service_heartbeat',
    sa.Column('owner', store.types.SafeString(length=200), nullable=False),
    sa.Column('started_at', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('beat_at', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', store.types.SafeString(length=50), nullable=False),
    sa.Column('intake', sa.JSON(), nullable=False),
    sa.Column('relay', sa.Boolean(), nullable=False),
    sa.CheckConstraint('length(owner) <= 200', name=op.f('ck_service_heartbeat_owner_len')),
    sa.CheckConstraint('length(version) <= 50', name=op.f('ck_service_heartbeat_version_len')),
    sa.PrimaryKeyConstraint('owner', name=op.f('pk_service_heartbeat'))
    )


def downgrade() -> None:
    op.drop_table('service_heartbeat')
