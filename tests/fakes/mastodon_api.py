"""A fake Mastodon instance on 127.0.0.1: what Mastodon.py calls to post and to check credentials.

    with FakeMastodon(token="...") as fake:
        Mastodon(api_base_url=fake.url, access_token="...")

POST /api/v1/statuses                  form field `status`; 200 with a Status; an Idempotency-Key seen before returns
                                       the status it created; `fake.failures` answer the next posts first;
                                       `fake.lose_answers` posts are created but answered 503
DELETE /api/v1/statuses/ID             200 with the deleted Status (and its `text`), the status gone
                                       (`fake.deleted` lists the ids, in order); 404 for one it does not hold;
                                       `fake.delete_failures` answer the next deletes first
GET  /api/v1/accounts/verify_credentials   the account (CredentialAccount)
GET  /api/v1/instance, /api/v2/instance    instance documents (Mastodon.py asks for them only for version checks)
A missing or wrong bearer token is a 401 {"error": "The access token is invalid"}.
`fake.echo` (an Echo): a hostile instance that answers requests with an error echoing them (the token included).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from tests.fakes.echo import Echo
from tests.fakes.loopback import FakeServer, Reply, Request

ACCOUNT = {"id": "109000000000000001", "username": "proverbot", "acct": "proverbot", "display_name": "Proverbot",
           "locked": False, "bot": True, "created_at": "2024-01-01T00:00:00.000Z", "note": "", "url": "",
           "avatar": "", "header": "", "followers_count": 0, "following_count": 0, "statuses_count": 0,
           "fields": [], "emojis": []}
INVALID_TOKEN = Reply(401, {"error": "The access token is invalid"})
UNAVAILABLE = Reply(503, {"error": "Service Unavailable"})


def rate_limited(reset: datetime) -> Reply:
    return Reply(429, {"error": "Too many requests"}, {
        "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": reset.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")})


class FakeMastodon(FakeServer):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.statuses: dict[str, dict] = {}     # id -> status
        self.by_key: dict[str, str] = {}        # Idempotency-Key -> status id
        self.failures: deque[Reply] = deque()
        self.delete_failures: deque[Reply] = deque()
        self.deleted: list[str] = []            # the ids of the statuses deleted, in order
        self.lose_answers = 0
        self.echo: Echo | None = None

    def handle(self, request: Request) -> Reply:
        if self.echo and self.echo.matches(request):
            return Reply(self.echo.status, {"error": self.echo.text(request)})
        if request.path in ("/api/v1/instance", "/api/v2/instance"):
            return Reply(200, {"uri": "127.0.0.1", "domain": "127.0.0.1", "title": "fake", "version": "4.3.0",
                               "api_versions": {"mastodon": 2}})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return INVALID_TOKEN
        if request.route == "GET /api/v1/accounts/verify_credentials":
            return Reply(200, {**ACCOUNT, "source": {"privacy": "public", "note": "", "fields": []}})
        if request.route == "POST /api/v1/statuses":
            return self.post(request)
        if request.method == "DELETE" and request.path.startswith("/api/v1/statuses/"):
            return self.delete(request.path.removeprefix("/api/v1/statuses/"))
        return Reply(404, {"error": "Record not found"})

    def post(self, request: Request) -> Reply:
        key = request.headers.get("Idempotency-Key")
        if key in self.by_key:
            return Reply(200, self.statuses[self.by_key[key]])
        if self.failures:
            return self.failures.popleft()
        status_id = str(110_000_000_000_000_000 + len(self.statuses))
        text = request.form()["status"]
        self.statuses[status_id] = {
            "id": status_id, "created_at": "2026-11-25T12:00:00.000Z", "content": f"<p>{text}</p>",
            "visibility": "public", "sensitive": False, "spoiler_text": "", "language": "en",
            "uri": f"{self.url}/users/proverbot/statuses/{status_id}", "url": f"{self.url}/@proverbot/{status_id}",
            "account": ACCOUNT, "media_attachments": [], "mentions": [], "tags": [], "emojis": [],
            "replies_count": 0, "reblogs_count": 0, "favourites_count": 0}
        if key:
            self.by_key[key] = status_id
        if self.lose_answers:
            self.lose_answers -= 1
            return UNAVAILABLE
        return Reply(200, self.statuses[status_id])

    def delete(self, status_id: str) -> Reply:
        if self.delete_failures:
            return self.delete_failures.popleft()
        status = self.statuses.pop(status_id, None)
        if status is None:
            return Reply(404, {"error": "Record not found"})
        self.deleted.append(status_id)
        return Reply(200, {**status, "text": status["content"][3:-4]})

    def texts(self) -> list[str]:
        return [status["content"][3:-4] for status in self.statuses.values()]
