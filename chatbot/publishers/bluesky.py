"""Bluesky: atproto's Client with a handle and an app password.

It logs in once (com.atproto.server.createSession, then app.bsky.actor.getProfile; atproto refreshes the session)
and posts with com.atproto.repo.createRecord. Each publish() picks the record key (a TID) and the creation time
once, so every try sends the same record; after a try with no clear answer, com.atproto.repo.getRecord tells
whether it is online before anything is sent again. Links and #tags become facets (no network lookups).
/unpost deletes a post with com.atproto.repo.deleteRecord (by its at:// URI, the remote id).
"""

import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from atproto_client import Client, models
from atproto_client.exceptions import (
    BadRequestError,
    RateLimitExceededError,
    RequestErrorBase,
    UnauthorizedError,
)
from atproto_client.request import Request
from atproto_client.utils.facet_detection import detect_facets
from atproto_core.uri import AtUri

from chatbot.publishers import BadCredentials, PublishError, PublishResult, Unavailable
from chatbot.publishers.lengths import bluesky_limits
from chatbot.publishers.remote import RemotePublisher, rate_limited
from chatbot.scrub import remember

SORTABLE_BASE32 = "234567abcdefghijklmnopqrstuvwxyz"
APP_PASSWORD = re.compile(r"^[a-z0-9]{4}(-[a-z0-9]{4}){3}$")


@dataclass(frozen=True)
class Draft:
    text: str
    rkey: str           # the record key every try uses
    created_at: str


class BlueskyPublisher(RemotePublisher):
    name = "bluesky"
    title = "Bluesky"

    def __init__(self, handle: str, app_password: str, *, base_url: str | None = None,
                 posts_per_day: int | None = None, **options) -> None:
        super().__init__(bluesky_limits(posts_per_day), **options)
        remember(app_password)
        self.handle = handle.lstrip("@")
        self.app_password = app_password
        self.source = f"handle @{self.handle} on {base_url or 'https://bsky.social'}, app password from the settings"
        self.client = Client(base_url=base_url, request=Request(timeout=self.timeout))
        self.client.on_session_change(lambda _event, session: remember(session.access_jwt, session.refresh_jwt))

    def draft(self, text: str) -> Draft:
        return Draft(text, new_tid(), datetime.now(UTC).isoformat())

    def create(self, draft: Draft) -> PublishResult:
        record = models.AppBskyFeedPost.Record(text=draft.text, created_at=draft.created_at,
                                               facets=detect_facets(draft.text) or None)
        return self.result(self.client.app.bsky.feed.post.create(self.did(), record, rkey=draft.rkey).uri)

    def find(self, draft: Draft) -> PublishResult | None:
        try:
            return self.result(self.client.app.bsky.feed.post.get(self.did(), draft.rkey).uri)
        except BadRequestError as err:
            if error_code(err) == "RecordNotFound":
                return None
            raise

    def remove(self, remote_id: str) -> None:
        """remote_id: the post's at:// URI (what create() returned)."""
        self.did()                      # logged in
        if not self.client.delete_post(remote_id):
            raise PublishError(f"Bluesky did not delete {remote_id}.")

    def whoami(self) -> str:
        self.login()
        me = self.client.me
        return f"the handle and app password work: posting as @{me.handle} ({me.did})"

    def did(self) -> str:
        if self.client.me is None:
            self.login()
        return self.client.me.did

    def login(self) -> None:
        try:
            self.client.login(self.handle, self.app_password)
        except UnauthorizedError as err:
            raise BadCredentials(self.diagnose(err)) from err

    def diagnose(self, err: UnauthorizedError) -> str:
        """After a refused login: does the handle exist (one unauthenticated call), and does the password even look
        like an app password?"""
        message = f"Bluesky refused the login ({err})"
        try:
            did = self.client.resolve_handle(self.handle).did
        except RequestErrorBase:
            return (f"{message}: the handle @{self.handle} does not resolve; check bluesky_handle (e.g. "
                    "name.bsky.social).")
        hint = "" if APP_PASSWORD.match(self.app_password) else (
            " It does not look like an app password (xxxx-xxxx-xxxx-xxxx): create one under Settings → Privacy and "
            "security → App passwords.")
        return (f"{message}: the handle @{self.handle} exists ({did}), so the app password is wrong or was "
                f"revoked.{hint}")

    def result(self, uri: str) -> PublishResult:
        return PublishResult(uri, f"https://bsky.app/profile/{self.client.me.handle}/post/{AtUri.from_str(uri).rkey}")

    def translate(self, err: Exception) -> PublishError:
        if isinstance(err, RateLimitExceededError):
            return rate_limited(self.title, err.reset_at)
        if isinstance(err, UnauthorizedError):
            return BadCredentials(f"Bluesky refused the session ({err}); check bluesky_handle and "
                                  "bluesky_app_password.")
        if isinstance(err, httpx.TransportError) or (isinstance(err, RequestErrorBase) and err.response is None):
            return Unavailable(f"Bluesky did not answer within {self.timeout:g} s or could not be reached "
                               f"({type(err).__name__}).")
        if isinstance(err, RequestErrorBase) and err.response.status_code >= 500:
            return Unavailable(f"Bluesky is unavailable ({err}).")
        if isinstance(err, RequestErrorBase):
            return PublishError(f"Bluesky refused the post ({err}).")
        return super().translate(err)


def error_code(err: RequestErrorBase) -> str | None:
    content = err.response.content if err.response is not None else None
    return getattr(content, "error", None)


def new_tid() -> str:
    """A record key in the TID format: microseconds since 1970 and a random clock id, in sortable base32."""
    value = (time.time_ns() // 1000) << 10 | random.getrandbits(10)
    return "".join(SORTABLE_BASE32[(value >> shift) & 31] for shift in range(60, -1, -5))
