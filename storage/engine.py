"""Turning a database URL into a working async engine, with a clear StorageError for everything that can go wrong.

parse_url(text)            the URL, with bare `sqlite://` / `postgresql://` given their async driver; a malformed
                           URL, an unknown dialect, a sync-only or missing driver is a StorageError naming the fix
make_engine(url, ...)      an AsyncEngine; on SQLite every connection gets WAL, busy_timeout, foreign_keys,
                           synchronous=NORMAL, and SQLAlchemy (not sqlite3) emits BEGIN: DEFERRED for reads,
                           IMMEDIATE for write sessions (execution option sqlite_begin), so a read→write upgrade can
                           never deadlock and a writer waits up to BUSY_TIMEOUT_S instead of failing
preflight_sqlite(path)     checks a SQLite file read-only before anything writes to it: folder, permissions,
                           header, readable schema, a proverbot log (or empty), a schema revision this code knows
"""

import os
import re
import sqlite3
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.errors import NewerSchema, StorageError

BUSY_TIMEOUT_S = 30
SQLITE_HEADER = b"SQLite format 3\x00"
EXAMPLES = "e.g. sqlite+aiosqlite:///proverbot.db or postgresql+asyncpg://user:password@host/proverbot"
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
                 "mysql": "mysql+aiomysql", "mariadb": "mariadb+aiomysql"}
PACKAGES = {"aiosqlite": "aiosqlite", "asyncpg": "asyncpg", "aiomysql": "aiomysql", "asyncmy": "asyncmy",
            "psycopg": "psycopg[binary]", "oracledb": "oracledb", "aioodbc": "aioodbc", "pymysql": "pymysql"}


def shown(url: URL | str) -> str:
    """The URL as it may appear in a message: never with its password."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def parse_url(text: str) -> URL:
    """A SQLAlchemy URL for an async driver, or a StorageError that says what to change or install."""
    try:
        url = make_url(text.strip())
    except ArgumentError:
        raise StorageError(f"database_url {shown(text)!r} is not a database URL: expected dialect+driver://..., "
                           f"{EXAMPLES}.") from None
    if url.drivername in ASYNC_DRIVERS:
        url = url.set(drivername=ASYNC_DRIVERS[url.drivername])
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise StorageError(f"database_url {shown(url)}: SQLAlchemy knows no database {url.drivername!r} "
                           f"(a third-party dialect must be installed first); {EXAMPLES}.") from None
    if not getattr(dialect, "is_async", False):
        backend = url.get_backend_name()
        better = ASYNC_DRIVERS.get(backend, f"{backend}+<an async driver>")
        raise StorageError(f"database_url {shown(url)}: {url.get_driver_name()!r} is not an asyncio driver; "
                           f"use {better}://...")
    try:
        dialect.import_dbapi()
    except ImportError as err:
        module = (getattr(err, "name", None) or url.get_driver_name()).split(".")[0]
        package = PACKAGES.get(module, module)
        raise StorageError(f"database_url {shown(url)} needs the Python package {package!r}, which is not installed: "
                           f"pip install '{package}' (into proverbot's environment).") from None
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise StorageError(f"database_url {shown(url)}: an in-memory SQLite database would vanish with the process; "
                           "name a file, e.g. sqlite+aiosqlite:///proverbot.db.")
    return url


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL (None for other databases and sqlite URI filenames)."""
    if url.get_backend_name() != "sqlite" or url.query.get("uri"):
        return None
    return Path(url.database).expanduser().absolute()


def make_engine(url: URL, *, foreign_keys: bool = True, wal: bool = True, **options) -> AsyncEngine:
    """An AsyncEngine for the URL; SQLite connections are set up as described in the module docstring.
    wal=False leaves the file's journal mode as it is (WAL is persistent: `db check` must not change the file)."""
    engine = create_async_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        setup_sqlite(engine, foreign_keys, wal)
    return engine


def setup_sqlite(engine: AsyncEngine, foreign_keys: bool, wal: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN of its own: on_begin does
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection):
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def preflight_sqlite(path: Path, known_revisions: Collection[str], *, create: bool) -> str | None:
    """Check the file without writing to it; returns its schema revision (None: new or empty database)."""
    folder = path.parent
    if not folder.is_dir():
        raise StorageError(f"Cannot open the log {path}: the folder {folder} does not exist.")
    if path.is_dir():
        raise StorageError(f"Cannot open the log {path}: it is a folder, not a file; set database_url to a file path.")
    if not path.exists():
        if not create:
            raise StorageError(f"There is no log at {path} yet (`proverbot db upgrade` creates it).")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"Cannot create the log {path}: no permission to write in {folder}.")
        return None
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
        raise StorageError(f"Cannot use the log {path}: it needs read and write access to the file and to its folder "
                           f"{folder} (SQLite keeps {path.name}-wal and {path.name}-shm beside it).")
    with open(path, "rb") as file:
        header = file.read(len(SQLITE_HEADER))
    if not header:
        return None  # an empty file is an empty SQLite database
    if header != SQLITE_HEADER:
        raise StorageError(f"{path} is not a SQLite database (another kind of file is there); move it away or set "
                           "database_url to another path.")
    tables, revision = read_sqlite_schema(path)
    if tables and "alembic_version" not in tables:
        listed = ", ".join(sorted(tables)[:5])
        raise StorageError(f"{path} is a SQLite database of something else (tables: {listed}), not a proverbot log; "
                           "set database_url to another path.")
    if revision is not None and revision not in known_revisions:
        raise NewerSchema(newer_message(shown(str(path)), revision))
    return revision


def read_sqlite_schema(path: Path) -> tuple[set[str], str | None]:
    """(table names, alembic revision) read through a read-only connection; a damaged file is a StorageError."""
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as err:
        raise StorageError(f"Cannot open the log {path}: {err}.") from None
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        return tables, revision
    except sqlite3.DatabaseError as err:
        raise StorageError(f"The log {path} is damaged ({err}); restore a backup (see `proverbot db backup`) or move "
                           "it away to start a new log.") from None
    finally:
        connection.close()


def newer_message(where: str, revision: str) -> str:
    return (f"The log {where} was made by a newer proverbot (schema revision {revision!r} is unknown to this "
            "version); upgrade proverbot, or point database_url at another database.")
