"""The connection to the log: engine, sessions, start-up checks, migrations, check and backup.

DatabaseCore(url, heartbeat_s=15.0)    parses the URL (StorageError if malformed or its driver is missing);
                                       heartbeat_s: how often a registered process beats
await db.start(migrate=True, recover=True) -> int
                                       checks the database without writing (SQLite: folder, permissions, header,
                                       schema, revision), upgrades it to the newest schema, then settles what is
                                       stale (see below): pending posts become "unknown" (returns how many), pending
                                       generations "failed" (proverbot stopped while sampling). The bot starts with
                                       the defaults; read-only tools pass recover=False so that they never touch a
                                       post a running bot is publishing.
await db.register_process() -> int     this process (host, pid) joins the `processes` table and beats every
                                       heartbeat_s in a background task, which also settles what is stale; the
                                       posts and generations it begins from then on are its own (owner_id)
await db.beat() -> int                 one heartbeat (the background task's), then what is stale is settled;
                                       returns how many posts became unknown
await db.close()                       stops the heartbeat and removes the process row
await db.check() -> CheckReport        integrity (SQLite), schema revision, row counts, posts needing a human
await db.backup(dest) -> Path          SQLite's online backup API: a consistent copy while the bot writes

Transactions: every API call opens, commits and closes its own short transaction (`_write()` / `_read()`), never
held across sampling or a network call. On SQLite writes begin IMMEDIATE and wait up to 30 s for the lock.

Several bot processes share one log (Discord shards, Slack behind a load balancer, a rolling restart). The one rule
(`stale`): a pending post or generation is stale when its owner's lease (3 of the owner's heartbeats past its last
beat) ran out (SIGKILLed) or the owner is gone (stopped), or when it has no owner (a row older than revision 0004,
or of a program that registered no process; the CLI commands that post register like a bot) and was last touched
before a cutoff: at a bot's start every unowned row, for a CLI command only those older than the longest they can
take. A live process's rows are never touched. Leases are set and compared by one clock: PostgreSQL's own (bots on
several hosts), the host's for a SQLite file; the cutoffs for unowned rows (minutes) use the host's.
"""

import asyncio
import logging
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, func, inspect, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage import migrate as migrations
from storage.engine import (
    BUSY_TIMEOUT_S,
    make_engine,
    parse_url,
    preflight_sqlite,
    shown,
    sqlite_path,
)
from storage.errors import StorageError, not_found
from storage.models import Base, Generation, Post, Process
from storage.records import CheckReport

log = logging.getLogger(__name__)
LEASE_BEATS = 3     # each beat extends a process's lease by this many heartbeats; silent past it, it has stopped


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(at: datetime | None) -> datetime:
    """`at` (default: now) as aware UTC; a naive datetime is a programming error."""
    if at is None:
        return utcnow()
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: pass a timezone-aware time (datetime.now(timezone.utc))")
    return at.astimezone(UTC)


def record(cls, obj, **extra):
    """A frozen record of `cls` from an ORM object's attributes of the same names."""
    names = [f.name for f in fields(cls) if f.name not in extra and hasattr(obj, f.name)]
    return cls(**{name: getattr(obj, name) for name in names}, **extra)


def stale(owner, touched, now: datetime, unowned_before: datetime | None):
    """The one rule for a pending row (a post or a generation): its owner process's lease ran out before `now` (or
    the process is gone), or it has no owner and was `touched` before `unowned_before` (None: unowned rows are left
    alone). Each process sets its own lease, so bots with different heartbeat_s can share the log."""
    live = select(Process.id).where(Process.lease_until > now)
    orphaned = and_(owner.is_not(None), owner.not_in(live))
    if unowned_before is None:
        return orphaned
    return or_(orphaned, and_(owner.is_(None), touched < aware(unowned_before)))


class DatabaseCore:
    def __init__(self, url: str, *, heartbeat_s: float = 15.0):
        if not 0 < heartbeat_s <= 86400:
            raise ValueError(f"heartbeat_s must be a positive number of seconds, at most a day, not {heartbeat_s!r}")
        self.heartbeat = timedelta(seconds=heartbeat_s)
        self.process_id: int | None = None  # set by register_process(): the owner of what this process begins
        self._beating: asyncio.Task | None = None
        self.url = parse_url(url)
        self.path = sqlite_path(self.url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.where = str(self.path) if self.path else shown(self.url)
        self.revision: str | None = None
        self.migrated: tuple[str | None, str | None] = (None, None)  # (before, after) of start()'s upgrade
        self._engine: AsyncEngine | None = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self, *, migrate: bool = True, recover: bool = True) -> int:
        """Check, migrate and open the log; returns how many pending posts were marked unknown (pending generations
        are marked failed)."""
        if self._engine is not None:
            raise RuntimeError("the database is already started")
        if self.path is not None:
            await asyncio.to_thread(preflight_sqlite, self.path, migrations.known_revisions(), create=migrate)
        engine = make_engine(self.url, wal=migrate)
        try:
            with self._translate():
                if migrate:
                    await self._migrate()
                async with engine.connect() as connection:
                    self.revision = await connection.run_sync(migrations.current_revision)
                if not migrate:
                    self.migrated = (self.revision, self.revision)
            self._engine = engine
            self._writer = async_sessionmaker(engine.execution_options(sqlite_begin="IMMEDIATE"),
                                              expire_on_commit=False)
            self._reader = async_sessionmaker(engine, expire_on_commit=False)
            if not recover:
                return 0
            now = utcnow()
            await self._fail_pending_generations(now)
            return await self._mark_pending_unknown(now)
        except BaseException:
            self._engine = None
            await engine.dispose()
            raise

    async def close(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._engine is not None:
            try:
                if self.process_id is not None:
                    async with self._write() as session:
                        await session.execute(delete(Process).where(Process.id == self.process_id))
            finally:
                self.process_id = None
                engine, self._engine = self._engine, None
                await engine.dispose()

    async def register_process(self) -> int:
        """Record this process and beat every heartbeat in the background until close(); returns its id."""
        if self.process_id is not None:
            raise RuntimeError("this process is already registered")
        async with self._write() as session:
            now = await self._clock(session)
            row = Process(host=socket.gethostname()[:200], pid=os.getpid(), started_at=now, beat_at=now,
                          lease_until=now + LEASE_BEATS * self.heartbeat)
            session.add(row)
            await session.flush()
            self.process_id = row.id
        self._beating = asyncio.create_task(self._beat_forever(), name=f"heartbeat of process #{row.id}")
        return row.id

    async def beat(self) -> int:
        """One heartbeat: this process is alive; the pending rows of processes that stopped beating are settled.
        Returns how many posts became unknown."""
        async with self._write() as session:
            now = await self._clock(session)
            await session.execute(update(Process).where(Process.id == self.process_id).values(
                beat_at=now, lease_until=now + LEASE_BEATS * self.heartbeat))
        await self._fail_pending_generations(None)
        return await self._mark_pending_unknown(None)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat.total_seconds())
            try:
                unknown = await self.beat()
            except StorageError as err:
                log.warning("heartbeat of process #%s failed, trying again: %s", self.process_id, err)
                continue
            if unknown:
                log.warning("%d post(s) of a proverbot process that stopped beating have an unknown outcome: check the "
                            "account, then `proverbot db settle-post ID posted|failed`", unknown)

    def _id(self, value, what: str) -> int:
        """`value` as the id of a `what` row; NotFound for anything no row can have (not a positive int, or past the
        id columns' INTEGER: 64-bit on SQLite, 32-bit on PostgreSQL and others) before a driver overflows on it."""
        biggest = 2**63 - 1 if self.is_sqlite else 2**31 - 1
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= biggest:
            raise not_found(what, value)
        return value

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("call `await db.start()` first")
        return self._engine

    async def _migrate(self) -> None:
        # Its own engine, foreign keys off (batch mode rebuilds tables; foreign_key_check runs before commit).
        engine = make_engine(self.url, foreign_keys=False)
        try:
            async with engine.connect() as connection:
                self.migrated = await connection.run_sync(migrations.upgrade, self.where)
        finally:
            await engine.dispose()

    async def _clock(self, session: AsyncSession) -> datetime:
        """Now for leases: the server's clock on PostgreSQL (bots on several hosts compare their leases by one clock),
        this host's for a SQLite file (every process on it shares the host's clock)."""
        if self.url.get_backend_name() != "postgresql":
            return utcnow()
        return aware(await session.scalar(select(func.now())))

    async def _mark_pending_unknown(self, unowned_before: datetime | None) -> int:
        """Stale pending posts (see `stale`) become unknown; returns how many."""
        async with self._write() as session:
            query = update(Post).where(Post.status == "pending", stale(
                Post.owner_id, Post.updated_at, await self._clock(session), unowned_before))
            result = await session.execute(query.values(
                status="unknown", updated_at=utcnow(),
                last_error="proverbot stopped while posting: check the platform by hand"))
            return result.rowcount

    async def _fail_pending_generations(self, unowned_before: datetime | None) -> int:
        """Stale pending generations (see `stale`) become failed: the process that sampled them stopped. Returns how
        many."""
        async with self._write() as session:
            query = update(Generation).where(Generation.status == "pending", stale(
                Generation.owner_id, Generation.created_at, await self._clock(session), unowned_before))
            result = await session.execute(query.values(
                status="failed", finished_at=utcnow(), error="proverbot stopped while sampling"))
            return result.rowcount

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Database failures (locked past the timeout, disk, permissions, server gone) as a StorageError."""
        try:
            yield
        except (IntegrityError, ProgrammingError):
            raise  # a bug in proverbot, not the person's to fix
        except DBAPIError as err:
            reason = str(err.orig).strip() or type(err.orig).__name__
            if "locked" in reason or "busy" in reason:
                reason = f"another program kept it busy for over {BUSY_TIMEOUT_S} s ({reason})"
            raise StorageError(f"The log {self.where} failed: {reason}.") from None
        except OSError as err:
            raise StorageError(f"Cannot reach the log {self.where}: {err.strerror or err}.") from None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed on exit (IMMEDIATE on SQLite)."""
        with self._translate():
            async with self._writer() as session, session.begin():
                yield session

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        with self._translate():
            async with self._reader() as session, session.begin():
                yield session

    async def check(self) -> CheckReport:
        """Integrity, schema revision and row counts; `problems` says what needs doing."""
        head = migrations.head_revision()
        problems = []
        with self._translate():
            async with self.engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
                integrity = "not checked (PostgreSQL and others check themselves; see their tools)"
                if self.is_sqlite:
                    rows = (await connection.exec_driver_sql("PRAGMA integrity_check")).scalars().all()
                    integrity = "ok" if rows == ["ok"] else "; ".join(rows[:5])
                    if integrity != "ok":
                        problems.append(f"integrity check failed: {integrity}")
                counts = {}
                for table in Base.metadata.sorted_tables:
                    if table.name in tables:
                        counted = await connection.execute(select(func.count()).select_from(table))
                        counts[table.name] = counted.scalar_one()
                if "posts" in tables:
                    unknown = (await connection.execute(
                        select(func.count()).select_from(Post).where(Post.status == "unknown"))).scalar_one()
                    if unknown:
                        problems.append(f"{unknown} post(s) with an unknown outcome need a human: see "
                                        "`proverbot history --kind posts`, then `proverbot db settle-post`")
        if self.revision != head:
            problems.append(f"schema revision is {self.revision or 'none'}, this proverbot expects {head}: "
                            "run `proverbot db upgrade`")
        return CheckReport(self.where, self.revision, head, integrity, counts, tuple(problems))

    async def backup(self, dest: Path | str) -> Path:
        """Copy a SQLite log to `dest` (never overwritten) with the online backup API; safe while the bot runs."""
        if self.path is None:
            raise StorageError(f"`db backup` copies SQLite files; back up {self.where} with its own tools "
                               "(for PostgreSQL: pg_dump).")
        await asyncio.to_thread(preflight_sqlite, self.path, migrations.known_revisions(), create=False)
        return await asyncio.to_thread(backup_sqlite, self.path, Path(dest).expanduser().absolute())


def backup_sqlite(source: Path, dest: Path) -> Path:
    if dest.exists():
        raise StorageError(f"{dest} already exists: backups never overwrite, choose a new name.")
    if not dest.parent.is_dir():
        raise StorageError(f"Cannot write the backup {dest}: the folder {dest.parent} does not exist.")
    partial = dest.with_name(dest.name + ".partial")
    try:
        src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            target = sqlite3.connect(partial)
            try:
                src.backup(target)  # one step: a consistent snapshot, writers carry on (WAL)
                target.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
                verdict = target.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                target.close()
        finally:
            src.close()
        if verdict != "ok":
            raise StorageError(f"The backup of {source} failed its check ({verdict}); run `proverbot db check`.")
        os.replace(partial, dest)
        return dest
    except (sqlite3.Error, OSError) as err:
        raise StorageError(f"Cannot back up {source} to {dest}: {err}.") from None
    finally:
        partial.unlink(missing_ok=True)
