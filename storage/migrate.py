"""Alembic, run from code: the revisions ship in storage/migrations/ so an installed proverbot can migrate its log.

known_revisions()          every revision id this version knows; head_revision() the newest
current_revision(conn)     the database's revision (None: no alembic_version table yet)
upgrade(conn, where)       brings the database to head inside ONE transaction, serialised against other processes
                           (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock); returns (before, after)
                           A revision this code does not know raises NewerSchema and touches nothing.

Writing a new revision: copy the newest file in storage/migrations/versions/, set `revision`/`down_revision`,
edit the operations (use `op.batch_alter_table` for SQLite) and add a test that upgrades an older file.
tests/test_storage_files.py checks that the revisions at head match storage/models.py exactly.
"""

from functools import cache
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from storage.engine import newer_message
from storage.errors import NewerSchema, StorageError
from storage.models import Base

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_LOCK_KEY = 0x70726F76  # "prov": one advisory lock id for proverbot's migrations


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in script_directory().walk_revisions())


def head_revision() -> str:
    return script_directory().get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, where: str, target: str = "head") -> tuple[str | None, str]:
    """Upgrade to `target` in one transaction (sync: call through AsyncConnection.run_sync). Returns (before, after).
    Only tests (and their fixture scripts) name a target other than head."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.execution_options(sqlite_begin="IMMEDIATE")
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        before = current_revision(connection)
        if before is not None and before not in known_revisions():
            raise NewerSchema(newer_message(where, before))
        if before == (head_revision() if target == "head" else target):
            return before, before
        command.upgrade(alembic_config(connection), target)
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StorageError(f"Upgrading the log {where} would break {len(broken)} references "
                                   f"(first: {tuple(broken[0])}); nothing was changed.")
        return before, current_revision(connection)


def schema_differences(connection: Connection) -> list:
    """What differs between the database and storage/models.py (empty when the revisions match the models)."""
    return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
