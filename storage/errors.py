"""Errors of the log that a person can act on: every one is a ProverbotError with a message written for them.

StorageError      the database cannot be opened, checked, migrated or written (bad URL, missing driver, corrupt
                  or foreign file, no write access, made by a newer proverbot, server unreachable, ...)
NewerSchema       the database was made by a newer proverbot (its schema revision is unknown here)
NotFound          a generation, candidate, post or schedule id that is not in the log
AlreadyPosted     that text (or candidate) was already posted on that platform; carries the post's URL
PostInProgress    a post of that text is pending, or "unknown" (the bot stopped mid-post: a human must check)
QuotaReached      the platform's posting quota (posts per window, counted from the log) is used up
ScheduleError     a schedule's time of day, time zone or window is invalid
"""

from datetime import datetime

from proverbot_errors import ProverbotError


class StorageError(ProverbotError):
    """The log database cannot be used as asked."""


class NewerSchema(StorageError):
    """The database's schema revision is unknown to this version of proverbot."""


class NotFound(StorageError):
    """An id that is not in the log."""


class AlreadyPosted(StorageError):
    """The text was already posted on this platform."""

    def __init__(self, message: str, post_id: int, platform: str, url: str | None, remote_id: str | None):
        super().__init__(message)
        self.post_id = post_id
        self.platform = platform
        self.url = url
        self.remote_id = remote_id


class PostInProgress(StorageError):
    """A post of the text is pending, or its outcome is unknown and needs a human."""

    def __init__(self, message: str, post_id: int, platform: str, status: str):
        super().__init__(message)
        self.post_id = post_id
        self.platform = platform
        self.status = status


class QuotaReached(StorageError):
    """The posting quota of a platform is used up; `next_at` is when the oldest counted post leaves the window."""

    def __init__(self, message: str, platform: str, used: int, limit: int, next_at: datetime):
        super().__init__(message)
        self.platform = platform
        self.used = used
        self.limit = limit
        self.next_at = next_at


class ScheduleError(StorageError):
    """A schedule setting is invalid."""
