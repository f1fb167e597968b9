"""Alembic runs migrations on the connection kcc-mail hands it; there is no alembic.ini to keep in sync."""

from alembic import context

from store import models
from store.schema import include_object

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=models.Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
