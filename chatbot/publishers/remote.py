"""What the real publishers share: blocking client libraries run in a worker thread with a timeout, their errors
become PublishErrors, and a platform that is unavailable is tried again with backoff, within a bound.

A subclass sets `name`, `title` and `limits`, and implements, all blocking (they run in a worker thread):

    create(draft) -> PublishResult     send the post
    find(draft) -> PublishResult|None  after a try with no clear answer (timeout, 5xx): is the post online after
                                       all? (default: cannot tell, None)
    remove(remote_id) -> None          delete a post it published (/unpost)
    whoami() -> str                    one cheap authenticated call, for `proverbot doctor`
    translate(err) -> PublishError     the library's exception as a message for a person

and may override draft(text), which fixes what every try of one publish() sends (e.g. Bluesky's record key). It
remembers its credentials (chatbot.scrub.remember) when built: every error message is scrubbed of them here, since a
platform's error text may echo the request.

No retry ever repeats a post that may be online without a check: after an unclear try, find() is asked first;
where the platform cannot tell (X), a "duplicate" answer to the retry means the first try probably went through,
and the post becomes OutcomeUnknown (a person checks) instead of failed.
"""

import asyncio
import logging
from datetime import UTC, datetime

import requests

from chatbot.publishers import (
    Duplicate,
    Limits,
    OutcomeUnknown,
    PublishError,
    PublishResult,
    RateLimited,
    Unavailable,
)
from chatbot.scrub import scrub

log = logging.getLogger(__name__)

TIMEOUT = 30.0      # seconds one HTTP call may take
ATTEMPTS = 3        # tries when the platform is unavailable
BACKOFF = 2.0       # seconds before the second try; doubled for each further one
GRACE = 5.0         # the worker thread gets this long beyond the HTTP timeout before we stop waiting for it


class RemotePublisher:
    name: str
    title: str
    source: str = ""        # where the settings and credentials come from, for `proverbot doctor`

    def __init__(self, limits: Limits, *, timeout: float = TIMEOUT, attempts: int = ATTEMPTS,
                 backoff: float = BACKOFF, sleep=asyncio.sleep) -> None:
        self.limits = limits
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep          # injectable: tests never wait for real time

    async def publish(self, text: str) -> PublishResult:
        """Post `text`; Unavailable is tried again after backoff, 2 × backoff, ... up to `attempts` tries."""
        draft = self.draft(text)
        unclear = False         # a previous try may have reached the platform
        for attempt in range(1, self.attempts + 1):
            try:
                found = await self.call(self.find, draft) if unclear else None
                return found or await self.call(self.create, draft)
            except Duplicate as err:
                if unclear:
                    raise OutcomeUnknown(f"{err} An earlier try got no clear answer, so that try may have posted "
                                         "it.") from err
                raise
            except Unavailable as err:
                unclear = True
                if attempt == self.attempts:
                    raise Unavailable(f"{err} Tried {attempt} time{'s' if attempt > 1 else ''}.") from err
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s Trying again in %g s.", err, delay)
                await self.sleep(delay)
        raise AssertionError("unreachable: the last try returns or raises")

    async def delete(self, remote_id: str) -> None:
        """Delete the post `remote_id` (a PublishResult's) on the platform. One try: a PublishError says why it
        failed, and a person may try again."""
        await self.call(self.remove, remote_id)

    async def verify(self) -> str:
        """Who the credentials log in as (one cheap authenticated call); a PublishError says what is wrong."""
        return await self.call(self.whoami)

    async def call(self, work, *args):
        """work(*args) in a worker thread, its exceptions translated, given up on after timeout + GRACE seconds.
        Every error of every call (publish, find, verify) passes here: its message is scrubbed of known secrets,
        which a platform may echo back."""
        def guarded():
            try:
                return work(*args)
            except PublishError as err:
                raise scrubbed(err)
            except Exception as err:
                raise scrubbed(self.translate(err)) from err

        try:
            return await asyncio.wait_for(asyncio.to_thread(guarded), self.timeout + GRACE)
        except TimeoutError:
            raise Unavailable(f"{self.title} did not answer within {self.timeout:g} s.") from None

    # -- for subclasses ---------------------------------------------------------------------------------------

    def draft(self, text: str):
        return text

    def create(self, draft) -> PublishResult:
        raise NotImplementedError

    def find(self, draft) -> PublishResult | None:
        return None

    def remove(self, remote_id: str) -> None:
        raise NotImplementedError

    def whoami(self) -> str:
        raise NotImplementedError

    def translate(self, err: Exception) -> PublishError:
        return self.network_error(err) or PublishError(f"{self.title} failed: {type(err).__name__}: {err}")

    def network_error(self, err: BaseException) -> Unavailable | None:
        """Unavailable for a timeout or a connection failure of requests (also when wrapped by the library)."""
        cause = err if isinstance(err, requests.RequestException) else err.__context__
        if isinstance(cause, requests.Timeout):
            return Unavailable(f"{self.title} did not answer within {self.timeout:g} s.")
        if isinstance(cause, requests.ConnectionError):
            return Unavailable(f"{self.title} could not be reached ({type(cause).__name__}).")
        return None


def scrubbed(err: PublishError) -> PublishError:
    """`err` with every remembered secret masked in its message (e.g. a password echoed by the server)."""
    err.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in err.args)
    return err


def longest_publish(timeout: float, attempts: int, backoff: float = BACKOFF) -> float:
    """Seconds one publish() can take at most: every try and every check timing out, and the backoff between."""
    return attempts * 2 * (timeout + GRACE) + backoff * (2 ** (attempts - 1) - 1)


def gone(title: str, remote_id: str) -> PublishError:
    """A delete answered 404: the post is not there (deleted already, or not this account's)."""
    return PublishError(f"{title} has no post {remote_id} on this account (404 Not Found): it may have been deleted "
                        "there already.")


def rate_limited(title: str, reset: datetime | None) -> RateLimited:
    """RateLimited saying until when (`reset`: when the platform's window resets, if it said)."""
    if reset is None:
        return RateLimited(f"{title} rate limited posting and did not say until when; try again in 15 minutes.")
    return RateLimited(f"{title} rate limited posting until {reset.astimezone(UTC):%H:%M} UTC.")
