"""Publishers: where a winning candidate goes (X, Mastodon, Bluesky, or nowhere: the dry run).

The core only sees this protocol: ``name`` (the platform recorded in the log) and ``publish(text)``, which
returns a PublishResult or raises PublishError with a message written for a person (rate limit, duplicate,
credentials, unavailable). Anything else it raises counts as a failure too; the post stays retryable.
``delete(remote_id)`` deletes a post it published (the PublishResult's remote_id: /unpost) or raises PublishError
saying why not. A publisher remembers its secrets when built (chatbot.scrub.remember); no message it raises contains
one, even one the platform echoed back.
A publisher may also have ``limits`` (Limits: its length rule and posting quota, checked before anything is
recorded), ``title`` (its name for people, e.g. "X") and ``verify()`` (one cheap authenticated call, for
`proverbot doctor`).

    twitter.py, mastodon.py, bluesky.py   the real publishers; remote.py: what they share (a worker thread per
                                          call, timeouts, retries with backoff, "did it go through?")
    dryrun.py                             posts nowhere
    lengths.py                            how each platform counts a text
    credentials.py                        where the secrets come from
    registry.py                           the configured publishers by name; factory.py builds them from settings

They know nothing of the log or the core: chatbot/posting.py posts through them exactly once (checks, pending,
publish, settle).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from proverbot_errors import ProverbotError


@dataclass(frozen=True)
class PublishResult:
    remote_id: str
    url: str


class PublishError(ProverbotError):
    """The platform refused or failed the post; str(err) says why. Not retried."""


class TooLong(PublishError):
    """The text is over the platform's length limit (checked before anything is sent)."""


class BadCredentials(PublishError):
    """The platform refused the credentials; the message says which part looks wrong."""


class Duplicate(PublishError):
    """The platform refused the text as a duplicate of an earlier post."""


class RateLimited(PublishError):
    """The platform's rate limit is hit; the message says until when."""


class Unavailable(PublishError):
    """The platform failed (5xx), timed out or could not be reached: retried with backoff, then final."""


class OutcomeUnknown(PublishError):
    """The post may or may not be online (e.g. a retry after a timeout was refused as a duplicate): a person must
    check. The log records it as "unknown", so it is never re-posted on its own."""


@dataclass(frozen=True)
class Limits:
    """What a platform accepts: at most max_length as `measure` counts it, and at most posts_per_day posts in any
    24 hours (counted from the log; None: no quota)."""

    max_length: int | None = None
    measure: Callable[[str], int] = len
    unit: str = "characters long"       # how the message names a length, e.g. "graphemes long"
    posts_per_day: int | None = None

    def check(self, title: str, text: str) -> None:
        """TooLong when `text` is over the limit."""
        if self.max_length is None:
            return
        length = self.measure(text)
        if length > self.max_length:
            raise TooLong(f"The text is {length} {self.unit}; {title} allows at most {self.max_length}.")


NO_LIMITS = Limits()


class Publisher(Protocol):
    name: str

    async def publish(self, text: str) -> PublishResult: ...

    async def delete(self, remote_id: str) -> None: ...


def limits_of(publisher: Publisher) -> Limits:
    return getattr(publisher, "limits", NO_LIMITS)


def title_of(publisher: Publisher) -> str:
    return getattr(publisher, "title", publisher.name)
