"""Opening the log: bad URLs, bad files and old or newer schemas; migrations, SQLite settings, check and backup.

Every refusal must be a StorageError with a message a person can act on, and must leave the file untouched.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from model.errors import ProverbotError
from storage import AlreadyPosted, Database, NewerSchema, StorageError, migrate
from storage.engine import BUSY_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "storage" / "v0001.sqlite"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


async def made_log(path: Path) -> Path:
    db = Database(sqlite_url(path))
    await db.start()
    gid = await db.record_generation("discord", channel_id="c1")
    await db.finish_generation(gid, ["a text"])
    await db.close()
    return path


async def refused(url: str, match: str, error=StorageError) -> str:
    db = Database(url)  # a bad URL may already fail here: that is fine, the same error type is expected
    with pytest.raises(error, match=match) as err:
        await db.start()
    assert isinstance(err.value, ProverbotError)
    return str(err.value)


# -- URLs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, match", [
    ("not a url", "not a database URL"),
    ("", "not a database URL"),
    ("nosuchdb+whatever://host/db", "SQLAlchemy knows no database 'nosuchdb"),
    ("mysql+aiomysql://user:secret@localhost/proverbot", "needs the Python package 'aiomysql'.*pip install"),
    ("postgresql+psycopg2://user@localhost/proverbot", "not an asyncio driver; use postgresql\\+asyncpg"),
    ("sqlite+pysqlite:///proverbot.db", "not an asyncio driver; use sqlite\\+aiosqlite"),
    ("sqlite+aiosqlite://", "in-memory"),
])
def test_unusable_urls_say_what_to_change_or_install(url, match):
    with pytest.raises(StorageError, match=match) as err:
        Database(url)
    assert "secret" not in str(err.value)


def test_bare_dialect_urls_get_their_async_driver(tmp_path):
    assert Database(f"sqlite:///{tmp_path}/a.db").url.drivername == "sqlite+aiosqlite"
    assert Database("postgres://u:pw@h/d").url.drivername == "postgresql+asyncpg"


async def test_an_unreachable_server_is_a_storage_error():
    message = await refused("postgresql+asyncpg://nobody:pw@127.0.0.1:1/proverbot", "Cannot reach|failed")
    assert "pw" not in message


# -- files ----------------------------------------------------------------------------------------

async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "proverbot.db"
    path.write_text("these are my notes, not a database\n" * 50)
    before = snapshot(path)
    await refused(sqlite_url(path), "is not a SQLite database")
    assert snapshot(path) == before


async def test_a_damaged_database_is_refused_untouched(tmp_path):
    path = await made_log(tmp_path / "proverbot.db")
    data = bytearray(path.read_bytes())
    data[100:1500] = os.urandom(1400)  # the schema's page, after the 100-byte header
    path.write_bytes(bytes(data))
    before = snapshot(path)
    await refused(sqlite_url(path), "is damaged.*backup")
    assert snapshot(path) == before


async def test_another_programs_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    before = snapshot(path)
    await refused(sqlite_url(path), "something else .tables: customers.*not a proverbot log")
    assert snapshot(path) == before


async def test_a_database_from_a_newer_proverbot_is_refused_untouched(tmp_path):
    path = await made_log(tmp_path / "proverbot.db")
    with sqlite3.connect(path) as newer:
        newer.execute("UPDATE alembic_version SET version_num = '0099_future'")
    newer.close()
    before = snapshot(path)
    message = await refused(sqlite_url(path), "made by a newer proverbot", NewerSchema)
    assert "0099_future" in message
    assert snapshot(path) == before


async def test_missing_folder_and_folder_path_are_refused(tmp_path):
    await refused(sqlite_url(tmp_path / "nowhere" / "proverbot.db"), "folder .*nowhere does not exist")
    await refused(sqlite_url(tmp_path), "it is a folder")
    assert not (tmp_path / "nowhere").exists()


@contextmanager
def read_only(folder: Path):
    """Make `folder` unwritable for this process: chmod, or as root (who ignores modes) the immutable flag."""
    if os.getuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(folder)], capture_output=True, check=False).returncode:
        pytest.skip("running as root without `chattr +i`: no way to make a folder read-only here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
async def test_a_read_only_location_is_refused_untouched(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    existing = folder / "existing.db"
    shutil.copy(await made_log(tmp_path / "made.db"), existing)
    before = snapshot(existing)
    with read_only(folder):
        message = await refused(sqlite_url(folder / "new.db"), "Cannot create the log")
        assert "no permission to write" in message
        message = await refused(sqlite_url(existing), "Cannot use the log")
        assert "write access" in message and "existing.db-wal" in message
        assert sorted(p.name for p in folder.iterdir()) == ["existing.db"]
    assert snapshot(existing) == before


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    db = Database(sqlite_url(tmp_path / "log.db"))
    await db.start()
    try:
        async with db.engine.connect() as connection:
            pragmas = {name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                       for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")}
        assert pragmas == {"journal_mode": "wal", "busy_timeout": BUSY_TIMEOUT_S * 1000, "foreign_keys": 1,
                           "synchronous": 1}
    finally:
        await db.close()


# -- migrations -----------------------------------------------------------------------------------

async def test_a_log_from_the_first_release_is_upgraded_keeping_every_row(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    with sqlite3.connect(path) as old:
        before = {t: old.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                  for t in ("generations", "candidates", "votes", "posts", "schedules")}
    old.close()
    db = Database(sqlite_url(path))
    await db.start(recover=False)       # only the migration: a start's recovery would settle the pending generation
    try:
        assert db.migrated == ("0001", migrate.head_revision())
        with sqlite3.connect(path) as new:
            for table, rows in before.items():
                columns = len(rows[0])
                assert [row[:columns] for row in new.execute(f"SELECT * FROM {table} ORDER BY id")] == rows, table
        new.close()
        gen = await db.get_generation(1)
        assert gen.created_at == datetime(2024, 3, 1, 9, 0, tzinfo=UTC) and gen.finished_at == gen.created_at
        assert [c.text for c in gen.candidates][1] == "thou shalt be wise — and quiet 🦉"
        assert (await db.get_generation(3)).finished_at is None  # still pending
        assert [row.votes for row in await db.tally(1)] == [2, 1, 0]
        with pytest.raises(AlreadyPosted, match="https://x.com/proverbot/status/1765"):
            await db.begin_post("x", candidate_id=1)
        retry = await db.begin_post("mastodon", text="A free text,  twice")
        assert (retry.id, retry.attempts) == (2, 3)
        assert (await db.get_schedule("discord", "c1", server_id="g1")).timezone == "Europe/Paris"
        await db.record_audit("upgrade.test", None, "pytest")
        assert (await db.check()).ok
        async with db.engine.connect() as connection:
            assert await connection.run_sync(migrate.schema_differences) == []
    finally:
        await db.close()


async def test_the_migrations_build_exactly_the_models(tmp_path):
    db = Database(sqlite_url(tmp_path / "new.db"))
    await db.start()
    try:
        assert db.migrated == (None, migrate.head_revision()) == (None, "0005")
        async with db.engine.connect() as connection:
            assert await connection.run_sync(migrate.schema_differences) == []
    finally:
        await db.close()
    again = Database(sqlite_url(tmp_path / "new.db"))
    await again.start()
    assert again.migrated == ("0005", "0005")
    await again.close()


async def test_check_reports_an_old_schema_without_upgrading_it(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    before = snapshot(path)
    db = Database(sqlite_url(path))
    await db.start(migrate=False, recover=False)
    try:
        report = await db.check()
    finally:
        await db.close()
    assert (report.revision, report.integrity, report.ok) == ("0001", "ok", False)
    assert report.counts["generations"] == 3 and report.counts["votes"] == 4 and "audit_log" not in report.counts
    assert any("proverbot db upgrade" in problem for problem in report.problems)
    with sqlite3.connect(path) as same:
        assert same.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
    same.close()
    assert snapshot(path)[0] == before[0]


async def test_check_names_posts_that_need_a_human(tmp_path):
    url = sqlite_url(tmp_path / "log.db")
    db = Database(url)
    await db.start()
    await db.begin_post("x", text="in flight")
    await db.close()
    db = Database(url)
    await db.start()
    report = await db.check()
    await db.close()
    assert not report.ok and "1 post(s) with an unknown outcome" in report.problems[0]


# -- backup ---------------------------------------------------------------------------------------

async def test_backup_copies_a_consistent_standalone_file_and_never_overwrites(tmp_path):
    url = sqlite_url(tmp_path / "log.db")
    db = Database(url)
    await db.start()
    try:
        gid = await db.record_generation("discord", channel_id="c1")
        await db.finish_generation(gid, ["kept in the backup"])
        dest = await db.backup(tmp_path / "copy.db")  # while the log is open, its last writes in the WAL
        await db.record_generation("discord", channel_id="after")
    finally:
        await db.close()
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert copy.execute("SELECT text FROM candidates").fetchall() == [("kept in the backup",)]
        assert copy.execute("SELECT count(*) FROM generations").fetchone() == (1,)
    copy.close()
    with pytest.raises(StorageError, match="already exists"):
        await Database(url).backup(dest)
    with pytest.raises(StorageError, match="does not exist"):
        await Database(url).backup(tmp_path / "missing" / "copy.db")
    with pytest.raises(StorageError, match="pg_dump"):
        await Database("postgresql+asyncpg://u@localhost/db").backup(tmp_path / "pg.db")
    assert sorted(p.name for p in tmp_path.iterdir() if "copy" in p.name) == ["copy.db"]
