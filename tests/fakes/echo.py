"""A hostile platform that echoes the request (headers and body: credentials included) in its error messages.

    fake.echo = Echo(400, url_encoded=True)          # every request to the fake answers 400 with the echo
    fake.echo = Echo(400, route="POST /xrpc/com.atproto.repo.createRecord")     # only that route's requests

Each fake puts the text in its platform's error shape (X: "detail", Mastodon: "error", Bluesky: "message").
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote_plus

from tests.fakes.loopback import Request


@dataclass(frozen=True)
class Echo:
    status: int
    url_encoded: bool = False       # the echo as a URL's query (quote_plus), else as it was sent
    route: str | None = None        # only this route's requests (e.g. "POST /2/tweets"); None: every request

    def matches(self, request: Request) -> bool:
        return self.route in (None, request.route)

    def text(self, request: Request) -> str:
        headers = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
        sent = f"{request.route}?{request.query} headers: {headers} body: {request.body.decode(errors='replace')}"
        return f"see https://status.invalid/echo?request={quote_plus(sent)}" if self.url_encoded else f"you sent {sent}"
