"""Errors of the log that a person can act on: every one is a ProverbotError with a message written for them.

StorageError      the database cannot be opened, checked, migrated or written (bad URL, missing driver, corrupt
                  or foreign file, no write access, made by a newer proverbot, server unreachable, ...)
NewerSchema       the database was made by a newer proverbot (its schema revision is unknown here)
NotFound          a generation, candidate or post id that is not in the log (or could not be: see not_found)
Unusable          a candidate the filter rejected (it cannot be voted for or posted), or an empty text to post
AlreadyPosted     that text (or candidate) was already posted on that platform; carries the post's URL
PostFinal         a post recorded as posted is settled again (that is final)
PostInProgress    a post of that text is pending, or "unknown" (the bot stopped mid-post: a human must check)
NotWithdrawable   a post that /unpost cannot withdraw: not posted (pending, failed, unknown), already withdrawn,
                  or without a remote id
QuotaReached      the platform's posting quota (posts per window, counted from the log) is used up
ScheduleError     a schedule's time of day, time zone or window is invalid
ModerationRefused a veto of a candidate already vetoed, posted or filtered out; a word past the blocklist's size
"""

from datetime import datetime

from proverbot_errors import ProverbotError


class StorageError(ProverbotError):
    """The log database cannot be used as asked."""


class NewerSchema(StorageError):
    """The database's schema revision is unknown to this version of proverbot."""


class NotFound(StorageError):
    """An id that is not in the log."""


def not_found(what: str, value) -> NotFound:
    """NotFound("There is no post #7 in the log."); a hostile id is cut short ("#99999999999999999999…"), one that is
    not a number is quoted ("#'7'")."""
    shown = str(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return NotFound(f"There is no {what} #{shown[:20] + '…' if len(shown) > 20 else shown} in the log.")


class Unusable(StorageError):
    """A candidate the filter rejected, or a text with nothing to post: refused before anything is written."""


def filtered_out(candidate_id: int, reason: str | None, action: str) -> Unusable:
    """Unusable("Candidate #1 was filtered out (blocked word) and cannot be posted.")"""
    why = f" ({reason.replace('_', ' ')})" if reason else ""
    return Unusable(f"Candidate #{candidate_id} was filtered out{why} and cannot be {action}.")


class AlreadyPosted(StorageError):
    """The text was already posted on this platform."""

    def __init__(self, message: str, post_id: int, platform: str, url: str | None, remote_id: str | None):
        super().__init__(message)
        self.post_id = post_id
        self.platform = platform
        self.url = url
        self.remote_id = remote_id


class PostFinal(StorageError):
    """A post recorded as posted is final: it cannot be settled again."""


class PostInProgress(StorageError):
    """A post of the text is pending, or its outcome is unknown and needs a human."""

    def __init__(self, message: str, post_id: int, platform: str, status: str):
        super().__init__(message)
        self.post_id = post_id
        self.platform = platform
        self.status = status


class NotWithdrawable(StorageError):
    """A post that cannot be withdrawn from its platform; the message says why (and nothing was sent)."""


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


class ModerationRefused(StorageError):
    """A moderation action that cannot be done: a candidate already vetoed or posted, a full blocklist."""
