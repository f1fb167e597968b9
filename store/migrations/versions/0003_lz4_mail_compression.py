"""lz4 compression for mail bytes and bodies on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 06:00:00.000000

Every stored mail writes its raw bytes and its text and HTML bodies. PostgreSQL compresses large values with
pglz by default, which costs the server more time per mail than the insert itself; lz4 compresses about as well
at a fraction of the cost. Only values written from now on use it; nothing is rewritten. SQLite does not
compress, and a PostgreSQL built without lz4 (or older than 14) keeps pglz: this is about speed, not meaning.
"""
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = (("blob", "data"), ("inbound_mail", "text_body"), ("inbound_mail", "html_body"))


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or (bind.dialect.server_version_info or (0,)) < (14,):
        return
    for table, column in COLUMNS:
        op.execute(
            f"DO $$ BEGIN ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}; "
            f"EXCEPTION WHEN feature_not_supported THEN RAISE NOTICE 'no {method} here; {table}.{column} "
            f"keeps its compression'; END $$"
        )
