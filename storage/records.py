"""The plain, frozen records the log's API takes and returns: no ORM object ever leaves storage/.

Every datetime is timezone-aware UTC.
"""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class NewCandidate:
    """A candidate to record with finish_generation (model.candidates.Candidate objects are accepted as they are)."""

    text: str
    tokens: int = 0
    usable: bool = True
    reason: str | None = None   # the filter's reason code when not usable, e.g. "too_long"
    detail: str = ""            # for people, e.g. "tweet length 301 > 280"


@dataclass(frozen=True)
class CandidateInfo:
    id: int
    generation_id: int
    position: int               # order in its batch, from 0
    text: str
    tokens: int
    chars: int
    usable: bool
    reason: str | None
    detail: str
    message_id: str | None      # the chat message that shows it, once sent
    vetoed_at: datetime | None = None   # /veto: never posted, its votes do not count (final), by whom
    vetoed_by_id: str | None = None
    vetoed_by_name: str | None = None


@dataclass(frozen=True)
class GenerationInfo:
    id: int
    platform: str
    server_id: str | None
    channel_id: str | None
    user_id: str | None
    user_name: str | None
    created_at: datetime
    prefix: str
    temperature: float | None
    top_k: int | None
    top_p: float | None
    length: int | None
    count: int | None
    seed: int | None
    run_name: str | None
    checkpoint_id: str | None
    device: str | None
    status: str                 # pending, ok, failed
    error: str | None
    duration_s: float | None
    samples: int | None
    tokens: int | None
    finished_at: datetime | None
    owner_id: int | None = None  # the bot process sampling it (its heartbeat keeps it pending); None: a CLI command
    candidates: tuple[CandidateInfo, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class VoteInfo:
    id: int
    candidate_id: int
    user_id: str
    user_name: str | None
    emoji: str
    voted_at: datetime
    removed_at: datetime | None  # set when the reaction was removed; None while it counts

    @property
    def active(self) -> bool:
        return self.removed_at is None


@dataclass(frozen=True)
class TallyRow:
    """Active votes on one candidate of a generation."""

    candidate_id: int
    position: int
    text: str
    usable: bool
    message_id: str | None
    votes: int                  # active votes (each user's each emoji counts once); 0 once vetoed
    voters: int                 # distinct users with an active vote; 0 once vetoed
    vetoed: bool = False        # /veto: it can never be posted


@dataclass(frozen=True)
class PostInfo:
    id: int
    platform: str               # x, mastodon, bluesky, dryrun, ...
    candidate_id: int | None    # None for free text
    text: str
    status: str                 # pending, posted, failed, unknown
    remote_id: str | None
    url: str | None
    requested_by_id: str | None
    requested_by_name: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    posted_at: datetime | None
    owner_id: int | None = None  # the bot process that began it (its heartbeat keeps it pending); None: a CLI command
    deleted_at: datetime | None = None     # withdrawn from its platform (/unpost, `proverbot unpost`), by whom
    deleted_by_id: str | None = None
    deleted_by_name: str | None = None


@dataclass(frozen=True)
class ScheduleInfo:
    id: int
    platform: str
    server_id: str
    channel_id: str
    time_of_day: str            # HH:MM in timezone
    timezone: str               # IANA name
    window_minutes: int         # how long the vote stays open
    enabled: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    set_by_id: str | None
    set_by_name: str | None
    updated_at: datetime
    publisher: str | None = None  # where it posts (x, mastodon, ...); None: the channel's or the bot's default


@dataclass(frozen=True)
class ScheduleRun:
    """A schedule claimed by claim_due_schedules: this process, and no other, runs it now."""

    schedule: ScheduleInfo      # already moved on: next_run_at is the following occurrence
    due_at: datetime            # the occurrence being run (may be long past after downtime)


@dataclass(frozen=True)
class AuditInfo:
    id: int
    at: datetime
    actor_id: str | None
    actor_name: str | None
    action: str                 # e.g. schedule.set, schedule.disable, post.settle
    target: str                 # e.g. "discord/123/456", "post #3"
    detail: str


@dataclass(frozen=True)
class BlockedWordInfo:
    """A word moderators blocked from chat (/blocklist add)."""

    id: int
    word: str                   # as the moderator wrote it
    word_key: str               # model.filters.blocked_key(word): folded, single spaces
    added_at: datetime
    added_by_id: str | None
    added_by_name: str | None


@dataclass(frozen=True)
class CheckReport:
    """What `proverbot db check` prints."""

    url: str
    revision: str | None
    head: str
    integrity: str              # "ok", the first problems found, or "not checked (...)" off SQLite
    counts: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems
