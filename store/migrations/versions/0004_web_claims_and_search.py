"""The web screen: who has a mail open (mail_claim), and full-text search over stored mail

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:00:00.000000

PostgreSQL gets a GIN expression index over the sender, subject and text (Dutch text search); SQLite an FTS5
table kept by triggers, filled once here from the mails already stored. store/search.py has the queries that
use them; store/schema.py tells Alembic's comparison that these objects are meant to be there.
"""
from alembic import op
import sqlalchemy as sa
import store.types
from store.search import PG_DOCUMENT, PG_INDEX, SQLITE_TABLE


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = "subject, from_name, from_address, text_body"


def upgrade() -> None:
    op.create_table('mail_claim',
    sa.Column('inbound_mail_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('medewerker', store.types.SafeString(length=320), nullable=False),
    sa.Column('naam', store.types.SafeString(length=200), nullable=False),
    sa.Column('since', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('until', store.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(medewerker) <= 320', name=op.f('ck_mail_claim_medewerker_len')),
    sa.CheckConstraint('length(naam) <= 200', name=op.f('ck_mail_claim_naam_len')),
    sa.ForeignKeyConstraint(['inbound_mail_id'], ['inbound_mail.id'],
                            name=op.f('fk_mail_claim_inbound_mail_id_inbound_mail'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('inbound_mail_id', name=op.f('pk_mail_claim'))
    )
    with op.batch_alter_table('mail_claim', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mail_claim_until'), ['until'], unique=False)

    # the history beside a mail (kcc.usecases.history): the same sender, and the mails that reply to it
    op.create_index('ix_inbound_mail_from_lower', 'inbound_mail', [sa.text('lower(from_address)')], unique=False)
    op.create_index('ix_inbound_mail_in_reply_to', 'inbound_mail', ['in_reply_to'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX {PG_INDEX} ON inbound_mail USING gin ({PG_DOCUMENT})")
        return
    op.execute(
        f"CREATE VIRTUAL TABLE {SQLITE_TABLE} USING fts5({COLUMNS}, content='inbound_mail', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    new = ", ".join(f"new.{c}" for c in COLUMNS.split(", "))
    old = ", ".join(f"old.{c}" for c in COLUMNS.split(", "))
    forget = f"INSERT INTO {SQLITE_TABLE}({SQLITE_TABLE}, rowid, {COLUMNS}) VALUES ('delete', old.id, {old});"
    remember = f"INSERT INTO {SQLITE_TABLE}(rowid, {COLUMNS}) VALUES (new.id, {new});"
    op.execute(f"CREATE TRIGGER {SQLITE_TABLE}_ai AFTER INSERT ON inbound_mail BEGIN {remember} END")
    op.execute(f"CREATE TRIGGER {SQLITE_TABLE}_ad AFTER DELETE ON inbound_mail BEGIN {forget} END")
    op.execute(f"CREATE TRIGGER {SQLITE_TABLE}_au AFTER UPDATE OF {COLUMNS} ON inbound_mail BEGIN "
               f"{forget} {remember} END")
    op.execute(f"INSERT INTO {SQLITE_TABLE}({SQLITE_TABLE}) VALUES ('rebuild')")


def downgrade() -> None:
    op.drop_index('ix_inbound_mail_in_reply_to', table_name='inbound_mail')
    op.drop_index('ix_inbound_mail_from_lower', table_name='inbound_mail')
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {PG_INDEX}")
    else:
        for suffix in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS {SQLITE_TABLE}_{suffix}")
        op.execute(f"DROP TABLE IF EXISTS {SQLITE_TABLE}")
    with op.batch_alter_table('mail_claim', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mail_claim_until'))
    op.drop_table('mail_claim')
