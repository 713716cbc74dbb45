"""A fake Bluesky PDS on 127.0.0.1: the XRPC methods atproto's Client calls to log in and post.

    with FakeBluesky("proverbot.test", "abcd-efgh-ijkl-mnop") as fake:
        Client(base_url=fake.url)                      # atproto adds /xrpc itself

POST /xrpc/com.atproto.server.createSession     {identifier, password} -> session (JWTs atproto can read), or 401
GET  /xrpc/app.bsky.actor.getProfile            the profile (the login's second call)
GET  /xrpc/com.atproto.identity.resolveHandle   the DID, or 400 "Unable to resolve handle"
POST /xrpc/com.atproto.repo.createRecord        stores the record under its rkey; `fake.failures` answer the next
                                                ones first; `fake.lose_answers` records are stored but answered 502
GET  /xrpc/com.atproto.repo.getRecord           the record, or 400 RecordNotFound
POST /xrpc/com.atproto.repo.deleteRecord        removes the record (as a PDS does, also when there is none: 200);
                                                `fake.deleted` lists the rkeys, in order; `fake.delete_failures`
                                                answer the next ones first
Calls other than the login's and resolveHandle need `Authorization: Bearer <accessJwt>`.
`fake.echo` (an Echo): a hostile PDS that answers requests with an error echoing them (password or token included).
"""

from __future__ import annotations

import base64
import json
import time
from collections import deque

from tests.fakes.echo import Echo
from tests.fakes.loopback import FakeServer, Reply, Request

DID = "did:plc:abcdefghijklmnopqrstuvwx"
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
UNAVAILABLE = Reply(503, {"error": "InternalServerError", "message": "Internal Server Error"})


def xrpc_error(status: int, error: str, message: str) -> Reply:
    return Reply(status, {"error": error, "message": message})


def rate_limited(reset: int) -> Reply:
    return Reply(429, {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
                 {"ratelimit-limit": "5000", "ratelimit-remaining": "0", "ratelimit-reset": str(reset),
                  "ratelimit-policy": "5000;w=3600"})


def jwt(payload: dict) -> str:
    """A token atproto can read the expiry of (nothing checks its signature on the client side)."""
    return f"{b64json({'typ': 'at+jwt', 'alg': 'ES256K'})}.{b64json(payload)}.c2lnbmF0dXJl"


def b64json(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class FakeBluesky(FakeServer):
    def __init__(self, handle: str, app_password: str) -> None:
        super().__init__()
        self.account, self.app_password = handle, app_password
        now = int(time.time())
        self.access = jwt({"scope": "com.atproto.appPass", "sub": DID, "iat": now, "exp": now + 7200})
        self.records: dict[str, dict] = {}      # rkey -> record
        self.failures: deque[Reply] = deque()
        self.delete_failures: deque[Reply] = deque()
        self.deleted: list[str] = []            # the rkeys of the records deleted, in order
        self.lose_answers = 0
        self.echo: Echo | None = None

    def handle(self, request: Request) -> Reply:
        if self.echo and self.echo.matches(request):
            return xrpc_error(self.echo.status, "InvalidRequest", self.echo.text(request))
        method = request.path.removeprefix("/xrpc/")
        if method == "com.atproto.server.createSession":
            return self.create_session(request.json())
        if method == "com.atproto.identity.resolveHandle":
            if request.args().get("handle") != self.account:
                return xrpc_error(400, "InvalidRequest", "Unable to resolve handle")
            return Reply(200, {"did": DID})
        if request.headers.get("Authorization") != f"Bearer {self.access}":
            return xrpc_error(401, "AuthenticationRequired", "Authentication Required")
        if method == "app.bsky.actor.getProfile":
            return Reply(200, {"did": DID, "handle": self.account, "displayName": "Proverbot", "followersCount": 0,
                               "followsCount": 0, "postsCount": len(self.records)})
        if method == "com.atproto.repo.createRecord":
            return self.create_record(request.json())
        if method == "com.atproto.repo.deleteRecord":
            return self.delete_record(request.json())
        if method == "com.atproto.repo.getRecord":
            return self.get_record(request.args()["rkey"])
        return xrpc_error(501, "MethodNotImplemented", f"{method} is not served by the fake")

    def create_session(self, body: dict) -> Reply:
        if body.get("identifier") not in (self.account, DID) or body.get("password") != self.app_password:
            return xrpc_error(401, "AuthenticationRequired", "Invalid identifier or password")
        refresh = jwt({"scope": "com.atproto.refresh", "sub": DID, "exp": int(time.time()) + 86400})
        return Reply(200, {"accessJwt": self.access, "refreshJwt": refresh, "handle": self.account, "did": DID,
                           "active": True})

    def create_record(self, body: dict) -> Reply:
        if self.failures:
            return self.failures.popleft()
        rkey = body["rkey"]
        if body["repo"] != DID or body["collection"] != "app.bsky.feed.post":
            return xrpc_error(400, "InvalidRequest", "wrong repo or collection")
        if rkey in self.records:
            return xrpc_error(400, "InvalidRequest", "Record already exists")
        self.records[rkey] = body["record"]
        if self.lose_answers:
            self.lose_answers -= 1
            return UNAVAILABLE
        return Reply(200, {"uri": f"at://{DID}/app.bsky.feed.post/{rkey}", "cid": CID,
                           "commit": {"cid": CID, "rev": "3l3qo2vuowo2b"}, "validationStatus": "valid"})

    def delete_record(self, body: dict) -> Reply:
        if self.delete_failures:
            return self.delete_failures.popleft()
        if body["repo"] != DID or body["collection"] != "app.bsky.feed.post":
            return xrpc_error(400, "InvalidRequest", "wrong repo or collection")
        self.records.pop(body["rkey"], None)
        self.deleted.append(body["rkey"])
        return Reply(200, {"commit": {"cid": CID, "rev": "3l3qo2vuowo2c"}})

    def get_record(self, rkey: str) -> Reply:
        if rkey not in self.records:
            return xrpc_error(400, "RecordNotFound", f"Could not locate record: at://{DID}/app.bsky.feed.post/{rkey}")
        return Reply(200, {"uri": f"at://{DID}/app.bsky.feed.post/{rkey}", "cid": CID, "value": self.records[rkey]})

    def texts(self) -> list[str]:
        return [record["text"] for record in self.records.values()]
