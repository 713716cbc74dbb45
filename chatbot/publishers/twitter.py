"""X (Twitter): tweepy 4's Client.create_tweet (API v2, POST /2/tweets) with OAuth 1.0a user context;
Client.delete_tweet (DELETE /2/tweets/:id) withdraws one.

tweepy is blocking (requests): RemotePublisher runs each call in a worker thread, and the session here gives every
request a timeout (tweepy passes none). wait_on_rate_limit stays off (it sleeps in the thread, and loops without
pause when a 429 has no reset header): a 429 becomes "rate limited until HH:MM UTC". After a 401 one more call
(an app-only token from the consumer key and secret alone) tells which pair of credentials is wrong.
"""

import logging
from datetime import UTC, datetime
from urllib.parse import quote

import requests
import tweepy

from chatbot.publishers import (
    BadCredentials,
    Duplicate,
    PublishError,
    PublishResult,
    Unavailable,
)
from chatbot.publishers.credentials import XCredentials
from chatbot.publishers.lengths import x_limits
from chatbot.publishers.remote import RemotePublisher, gone, rate_limited
from chatbot.scrub import remember

API = "https://api.twitter.com"     # tweepy's hard-coded host
FREE_TIER_POSTS_PER_DAY = 17        # POST /2/tweets on the free tier, per 24 hours

# oauthlib and requests-oauthlib log the signed Authorization header at DEBUG: never let those lines out.
for _name in ("oauthlib", "requests_oauthlib"):
    logging.getLogger(_name).setLevel(logging.INFO)


class TimeoutSession(requests.Session):
    """A requests session whose calls time out after `timeout` seconds unless told otherwise."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


class XPublisher(RemotePublisher):
    name = "x"
    title = "X"

    def __init__(self, credentials: XCredentials, *, max_length: int = 280,
                 posts_per_day: int | None = FREE_TIER_POSTS_PER_DAY, **options) -> None:
        super().__init__(x_limits(max_length, posts_per_day), **options)
        remember(credentials.consumer_key, credentials.consumer_secret, credentials.access_token,
                 credentials.access_token_secret)
        self.credentials = credentials
        self.source = f"credentials from {credentials.source}"
        self.client = tweepy.Client(consumer_key=credentials.consumer_key,
                                    consumer_secret=credentials.consumer_secret,
                                    access_token=credentials.access_token,
                                    access_token_secret=credentials.access_token_secret, wait_on_rate_limit=False)
        self.client.session = TimeoutSession(self.timeout)

    def create(self, text: str) -> PublishResult:
        tweet_id = str(self.client.create_tweet(text=text, user_auth=True).data["id"])
        return PublishResult(tweet_id, f"https://x.com/i/web/status/{tweet_id}")

    def remove(self, remote_id: str) -> None:
        try:
            deleted = self.client.delete_tweet(remote_id, user_auth=True).data["deleted"]
        except tweepy.NotFound:
            raise gone(self.title, remote_id) from None
        if not deleted:
            raise PublishError(f"X did not delete tweet {remote_id} (it answered deleted: false).")

    def whoami(self) -> str:
        user = self.client.get_me(user_auth=True).data
        return f"all four credentials work: posting as @{user.username} (user id {user.id})"

    def translate(self, err: Exception) -> PublishError:
        if isinstance(err, tweepy.TooManyRequests):
            return rate_limited(self.title, None if err.reset_time is None else
                                datetime.fromtimestamp(err.reset_time, UTC))
        if isinstance(err, tweepy.Unauthorized):
            return BadCredentials(self.diagnose())
        if isinstance(err, tweepy.Forbidden) and any("duplicate" in m.lower() for m in err.api_messages):
            return Duplicate("X refused it as duplicate content: this account posted the same text before.")
        if isinstance(err, tweepy.Forbidden):
            return PublishError(f"X refused the post ({said(err)}). If the app lacks Read and Write permission, "
                                "change it in the developer portal, then generate the access token again.")
        if isinstance(err, tweepy.TwitterServerError):
            return Unavailable(f"X is unavailable ({said(err)}).")
        if isinstance(err, tweepy.HTTPException):
            return PublishError(f"X refused the post ({said(err)}).")
        return super().translate(err)

    def diagnose(self) -> str:
        """After a 401: which credentials look wrong, from their form, then from whether the consumer key and
        secret alone are accepted."""
        start = "X refused the credentials (401 Unauthorized): "
        problems = self.credentials.shape_problems()
        if problems:
            return start + "; ".join(problems) + "."
        consumer_works = self.consumer_pair_works()
        if consumer_works:
            return start + ("the consumer key and secret work (X issued an app-only token with them), so the "
                            "access token or the access token secret is wrong or was revoked: generate them again.")
        if consumer_works is False:
            return start + ("the consumer key or the consumer secret (the app's API key and secret) is wrong or was "
                            "regenerated.")
        return start + "one of the consumer key, consumer secret, access token and access token secret is wrong."

    def consumer_pair_works(self) -> bool | None:
        """Whether X issues an app-only bearer token for the consumer key and secret (None: no clear answer)."""
        auth = requests.auth.HTTPBasicAuth(quote(self.credentials.consumer_key, safe=""),
                                           quote(self.credentials.consumer_secret, safe=""))
        try:
            response = self.client.session.post(f"{API}/oauth2/token", data={"grant_type": "client_credentials"},
                                                auth=auth)
        except requests.RequestException:
            return None
        if response.status_code == 200:
            return True
        return False if response.status_code in (401, 403) else None


def said(err: tweepy.HTTPException) -> str:
    """'403 Forbidden: <X's message>' without tweepy's line breaks."""
    return str(err).replace("\n", ": ", 1).replace("\n", "; ")
