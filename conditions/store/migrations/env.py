"""Alembic environment: runs migrations on the connection the store hands over.

The store opens the connection, takes its migration lock (BEGIN IMMEDIATE on SQLite, an
advisory lock on PostgreSQL) and passes it in ``config.attributes["connection"]``, so the
migrations run inside the caller's transaction and two processes opening a fresh store at
once cannot both create the tables.
"""

from alembic import context

from conditions.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "conditions store migrations run through conditions.store.open_store(), "
        "which supplies the database connection"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite needs table rebuilds for ALTER; batch mode makes future migrations portable.
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)

with context.begin_transaction():
    context.run_migrations()
