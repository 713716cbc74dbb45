"""A fake of the X API v2 endpoints the publisher uses, on 127.0.0.1, checking OAuth 1.0a signatures for real.

    with FakeX(*keys) as fake:
        route_session(publisher.client.session, fake.origin, fake.url)   # tweepy's https://api.twitter.com
        monkeypatch.setattr(twitter, "TimeoutSession", sessions_to(fake.url))   # or: every XPublisher built now

POST /2/tweets       201 {"data": {"id", "text", "edit_history_tweet_ids"}}; 403 duplicate content for a text this
                     account posted; `fake.failures` (Replies) answer the next creates first; `fake.lose_answers`
                     creates post the tweet but answer 503 (X did it, the answer was lost)
DELETE /2/tweets/ID  200 {"data": {"deleted": true}} and the tweet is gone (`fake.deleted` lists the ids, in
                     order), 404 for a tweet it does not hold; `fake.delete_failures` answer the next deletes first
GET /2/users/me      200 {"data": {"id", "name", "username"}}
POST /oauth2/token   the app-only token: 200 when HTTP Basic carries the consumer key and secret, else 403
Any request under /2/ with a bad OAuth 1.0a signature, consumer key or token is a 401, X's shape.
The signature is checked with oauthlib against the URL as signed (https://api.twitter.com/...).
`fake.echo` (an Echo): a hostile X that answers requests with an error echoing them (credentials included).
"""

from __future__ import annotations

import base64
from collections import deque
from types import SimpleNamespace
from urllib.parse import unquote

from oauthlib.oauth1.rfc5849 import signature, utils

from chatbot.publishers.twitter import API, TimeoutSession
from tests.fakes.echo import Echo
from tests.fakes.loopback import FakeServer, Reply, Request, route_session

USER = {"id": "1234567890", "name": "Proverbot", "username": "proverbot"}


def problem(status: int, title: str, detail: str) -> Reply:
    """X's v2 error shape."""
    return Reply(status, {"title": title, "detail": detail, "type": "about:blank", "status": status})


UNAUTHORIZED = problem(401, "Unauthorized", "Unauthorized")
DUPLICATE = problem(403, "Forbidden", "You are not allowed to create a Tweet with duplicate content.")
UNAVAILABLE = problem(503, "Service Unavailable", "Service Unavailable")


def rate_limited(reset: int) -> Reply:
    reply = problem(429, "Too Many Requests", "Too Many Requests")
    reply.headers = {"x-rate-limit-limit": "17", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
    return reply


def sessions_to(url: str) -> type[TimeoutSession]:
    """A stand-in for chatbot.publishers.twitter.TimeoutSession whose sessions carry X's traffic to `url`."""

    class RoutedSession(TimeoutSession):
        def __init__(self, timeout: float) -> None:
            super().__init__(timeout)
            route_session(self, API, url)

    return RoutedSession


class FakeX(FakeServer):
    origin = API

    def __init__(self, consumer_key: str, consumer_secret: str, access_token: str, access_token_secret: str):
        super().__init__()
        self.keys = (consumer_key, consumer_secret, access_token, access_token_secret)
        self.tweets: dict[str, str] = {}        # id -> text
        self.failures: deque[Reply] = deque()
        self.delete_failures: deque[Reply] = deque()
        self.deleted: list[str] = []            # the ids of the tweets deleted, in order
        self.lose_answers = 0
        self.verified = 0                       # requests whose signature checked out
        self.echo: Echo | None = None

    def handle(self, request: Request) -> Reply:
        if self.echo and self.echo.matches(request):
            return problem(self.echo.status, "Bad Request", self.echo.text(request))
        if request.route == "POST /oauth2/token":
            return self.app_only_token(request)
        if not self.signed(request):
            return UNAUTHORIZED
        self.verified += 1
        if request.route == "GET /2/users/me":
            return Reply(200, {"data": USER})
        if request.route == "POST /2/tweets":
            return self.create(request.json()["text"])
        if request.method == "DELETE" and request.path.startswith("/2/tweets/"):
            return self.delete(request.path.removeprefix("/2/tweets/"))
        return problem(404, "Not Found Error", f"no route {request.route} in the fake")

    def create(self, text: str) -> Reply:
        if self.failures:
            return self.failures.popleft()
        if text in self.tweets.values():
            return DUPLICATE
        tweet_id = str(1_800_000_000_000_000_000 + len(self.tweets))
        self.tweets[tweet_id] = text
        if self.lose_answers:
            self.lose_answers -= 1
            return UNAVAILABLE
        return Reply(201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}})

    def delete(self, tweet_id: str) -> Reply:
        if self.delete_failures:
            return self.delete_failures.popleft()
        if self.tweets.pop(tweet_id, None) is None:
            return problem(404, "Not Found Error", f"Could not find tweet with id: [{tweet_id}].")
        self.deleted.append(tweet_id)
        return Reply(200, {"data": {"deleted": True}})

    def signed(self, request: Request) -> bool:
        """An OAuth 1.0a HMAC-SHA1 signature made with this account's four keys."""
        header = request.headers.get("Authorization", "")
        try:
            oauth = dict(utils.parse_authorization_header(header))
        except ValueError:
            return False
        consumer_key, consumer_secret, token, token_secret = self.keys
        if oauth.get("oauth_consumer_key") != consumer_key or oauth.get("oauth_token") != token:
            return False
        form = request.body if "form-urlencoded" in request.headers.get("Content-Type", "") else None
        signed = SimpleNamespace(
            http_method=request.method, uri=f"{self.origin}{request.path}?{request.query}".rstrip("?"),
            signature=unquote(oauth.get("oauth_signature", "")),
            params=signature.collect_parameters(uri_query=request.query, body=form, headers={"Authorization": header}))
        return signature.verify_hmac_sha1(signed, consumer_secret, token_secret)

    def app_only_token(self, request: Request) -> Reply:
        expected = base64.b64encode(f"{self.keys[0]}:{self.keys[1]}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return Reply(403, {"errors": [{"code": 99, "label": "authenticity_token_error",
                                           "message": "Unable to verify your credentials"}]})
        return Reply(200, {"token_type": "bearer", "access_token": "AAAA-app-only-token"})
