"""Mastodon: Mastodon.py's status_post (POST /api/v1/statuses) with an instance URL and an access token;
status_delete (DELETE /api/v1/statuses/:id) withdraws one.

Mastodon.py is blocking (requests); RemotePublisher runs it in a worker thread. Its rate-limit handling is set to
"throw" (its default "wait" sleeps in the thread) and its version check stays off, so creating the client makes no
request. Every post carries an Idempotency-Key made from its text: a retry of a post the instance did create
(within the hour Mastodon remembers keys) returns that status instead of posting it again.
"""

import hashlib
from datetime import UTC, datetime

from mastodon import (
    Mastodon,
    MastodonAPIError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonUnauthorizedError,
)

from chatbot.publishers import BadCredentials, PublishError, PublishResult, Unavailable
from chatbot.publishers.lengths import MASTODON_LIMIT, mastodon_limits
from chatbot.publishers.remote import RemotePublisher, gone, rate_limited
from chatbot.scrub import remember


class MastodonPublisher(RemotePublisher):
    name = "mastodon"
    title = "Mastodon"

    def __init__(self, api_base_url: str, access_token: str, *, max_length: int = MASTODON_LIMIT,
                 posts_per_day: int | None = None, **options) -> None:
        super().__init__(mastodon_limits(max_length, posts_per_day), **options)
        remember(access_token)
        self.api_base_url = api_base_url.rstrip("/")
        self.source = f"instance {self.api_base_url}, access token from the settings"
        self.client = Mastodon(api_base_url=self.api_base_url, access_token=access_token, ratelimit_method="throw",
                               request_timeout=self.timeout, version_check_mode="none")

    def create(self, text: str) -> PublishResult:
        status = self.client.status_post(text, idempotency_key=idempotency_key(text))
        return PublishResult(str(status["id"]), status["url"] or status["uri"])

    def remove(self, remote_id: str) -> None:
        try:
            self.client.status_delete(remote_id)
        except MastodonNotFoundError:
            raise gone(self.title, remote_id) from None

    def whoami(self) -> str:
        account = self.client.account_verify_credentials()
        return f"the instance answers and accepts the access token: posting as @{account['acct']}"

    def translate(self, err: Exception) -> PublishError:
        if isinstance(err, MastodonRatelimitError):
            reset = self.client.ratelimit_reset
            return rate_limited(self.title, None if reset is None else datetime.fromtimestamp(reset, UTC))
        if isinstance(err, MastodonUnauthorizedError):
            return BadCredentials(f"{self.api_base_url} answers, but refused the access token ({said(err)}): it is "
                                  "wrong or was revoked. Create one under Preferences → Development with the "
                                  "write:statuses and read:accounts scopes.")
        if isinstance(err, MastodonNotFoundError):
            return PublishError(f"{self.api_base_url} does not look like a Mastodon instance ({said(err)}): check "
                                "mastodon_api_base_url.")
        if isinstance(err, MastodonServerError):
            return Unavailable(f"Mastodon is unavailable ({said(err)}).")
        if isinstance(err, MastodonNetworkError):
            return self.network_error(err) or Unavailable(f"Mastodon could not be reached at {self.api_base_url}.")
        if isinstance(err, MastodonAPIError):
            return PublishError(f"Mastodon refused the post ({said(err)}).")
        return super().translate(err)


def idempotency_key(text: str) -> str:
    return "proverbot-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def said(err: MastodonAPIError) -> str:
    """'422 Unprocessable Entity: Validation failed: ...' from Mastodon.py's (message, status, reason, error)."""
    if len(err.args) < 4:
        return str(err)
    _, status, reason, error = err.args[:4]
    return f"{status} {reason}" + (f": {error}" if error else "")
