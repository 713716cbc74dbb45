"""The log's tables as typed SQLAlchemy 2 ORM models. Nothing here leaves storage/: the API returns records.py.

generations  one request for candidates: who, where, when, every sampling parameter, the model, the outcome
candidates   the texts of a generation in batch order, with the filter's verdict and the chat message showing it
votes        one row per (candidate, user, emoji); a removed reaction sets removed_at, re-adding clears it
posts        one row per (platform, normalised text): pending → posted | failed | unknown; never posted twice
schedules    one row per (platform, server, channel): a daily time in an IANA zone, claimed by next_run_at, and the
             publisher it posts to
audit_log    admin actions: who did what to what, when
blocked_words  revision 0005: the words moderators blocked from chat (matched as whole words, case- and
             accent-insensitively, with the config file's blocked_words)
channel_runs revision 0005: the run a channel samples from (/model use), one row per (platform, server, channel)
processes    one row per running bot process (revision 0004): its heartbeat; pending posts and generations name
             their owner (owner_id, no foreign key: a gone or silent owner means the row is stale, see storage/db.py)

Every time is a timezone-aware UTC datetime (UtcDateTime). Changing a table means a new Alembic revision in
storage/migrations/versions/ (render_as_batch is on, so SQLite can alter tables).
"""

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

GENERATION_STATUSES = ("pending", "ok", "failed")
POST_STATUSES = ("pending", "posted", "failed", "unknown")


class UtcDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC text; PostgreSQL timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the log stores timezone-aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(_one_of("status", GENERATION_STATUSES), name="status"),
        Index(None, "platform", "channel_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[str | None] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    user_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    prefix: Mapped[str] = mapped_column(Text, default="")
    temperature: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[int | None]
    top_p: Mapped[float | None] = mapped_column(Float)
    length: Mapped[int | None]
    count: Mapped[int | None]
    seed: Mapped[int | None] = mapped_column(BigInteger)
    run_name: Mapped[str | None] = mapped_column(String(200))
    checkpoint_id: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int | None]
    tokens: Mapped[int | None]
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # revision 0002
    owner_id: Mapped[int | None]  # revision 0004: the process sampling it (None: a CLI command, or older)


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("generation_id", "position"), Index(None, "message_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    position: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(default=0)
    chars: Mapped[int] = mapped_column(default=0)
    usable: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(64))
    vetoed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # revision 0005: never posted, votes void
    vetoed_by_id: Mapped[str | None] = mapped_column(String(64))
    vetoed_by_name: Mapped[str | None] = mapped_column(String(200))


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("candidate_id", "user_id", "emoji"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str | None] = mapped_column(String(200))
    emoji: Mapped[str] = mapped_column(String(64))
    voted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (
        UniqueConstraint("platform", "text_key"),
        CheckConstraint(_one_of("status", POST_STATUSES), name="status"),
        Index(None, "status"),
        Index(None, "platform", "posted_at"),  # revision 0002: the quota's query
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidates.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    text_key: Mapped[str] = mapped_column(String(64))  # sha256 of the normalised text
    status: Mapped[str] = mapped_column(String(16), default="pending")
    remote_id: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(Text)
    requested_by_id: Mapped[str | None] = mapped_column(String(64))
    requested_by_name: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(default=1)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    posted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    owner_id: Mapped[int | None]  # revision 0004: the process that began it (None: a CLI command, or older)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())  # revision 0005: withdrawn by /unpost
    deleted_by_id: Mapped[str | None] = mapped_column(String(64))
    deleted_by_name: Mapped[str | None] = mapped_column(String(200))


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("platform", "server_id", "channel_id"), Index(None, "enabled", "next_run_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[str] = mapped_column(String(64), default="")
    channel_id: Mapped[str] = mapped_column(String(64))
    time_of_day: Mapped[str] = mapped_column(String(5))  # HH:MM, local to timezone
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name, e.g. Europe/Paris
    window_minutes: Mapped[int]
    publisher: Mapped[str | None] = mapped_column(String(32))  # revision 0003; None: the default publisher
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    next_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    set_by_id: Mapped[str | None] = mapped_column(String(64))
    set_by_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Process(Base):
    """Revision 0004. Ids are never reused (AUTOINCREMENT on SQLite), so a gone process's rows stay orphaned."""

    __tablename__ = "processes"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    beat_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_until: Mapped[datetime] = mapped_column(UtcDateTime())  # beat_at + 3 of its heartbeats: alive until then


class BlockedWord(Base):
    """Revision 0005."""

    __tablename__ = "blocked_words"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    word_key: Mapped[str] = mapped_column(String(200), unique=True)  # casefolded, accents stripped
    word: Mapped[str] = mapped_column(String(200))  # as the moderator wrote it
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())
    added_by_id: Mapped[str | None] = mapped_column(String(64))
    added_by_name: Mapped[str | None] = mapped_column(String(200))


class ChannelRun(Base):
    """Revision 0005."""

    __tablename__ = "channel_runs"
    __table_args__ = (UniqueConstraint("platform", "server_id", "channel_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[str] = mapped_column(String(64), default="")
    channel_id: Mapped[str] = mapped_column(String(64))
    run_name: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[datetime] = mapped_column(UtcDateTime())
    set_by_id: Mapped[str | None] = mapped_column(String(64))
    set_by_name: Mapped[str | None] = mapped_column(String(200))


class AuditEntry(Base):
    """Revision 0002."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
