"""Alembic environment of the log, configured from code: no alembic.ini is needed at run time.

storage.migrate runs it with `config.attributes["connection"]`, a connection already inside the transaction that
the whole upgrade shares (on SQLite a BEGIN IMMEDIATE, with foreign keys off so that batch mode may rebuild
tables; foreign_key_check runs before the commit). The alembic command line is not used: to add a revision, copy
the newest file in versions/ (script.py.mako is the template), set revision/down_revision and write its
operations; tests/test_storage_files.py checks that the revisions build exactly storage/models.py.
"""

from alembic import context

from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("storage/migrations runs through storage.migrate (it passes the connection), not the "
                       "alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: batch mode copies the table instead
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
