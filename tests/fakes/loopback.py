"""What the publishing fakes share: a threaded HTTP server on 127.0.0.1, a requests transport adapter that carries
requests for a remote origin (tweepy's hard-coded https://api.twitter.com) to it, and a guard that makes any
connection beyond 127.0.0.1 fail the test.

    with FakeX(...) as fake:                       # a FakeServer subclass: handle(request) -> Reply
        route_session(client.session, fake.origin, fake.url)   # https://api.twitter.com/... goes to the fake
        ...
        assert [r.path for r in fake.requests] == ["/2/tweets"]

A fake can hold the next request of a route: the handler records it, sets `held`, and answers only once `release`
is set (or after HOLD_LIMIT seconds): the test kills the client in between.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import HTTPAdapter

HOLD_LIMIT = 10.0       # seconds a held request waits for `release` at most
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class Request:
    method: str
    path: str               # without the query
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    def json(self):
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    def args(self) -> dict[str, str]:
        return dict(parse_qsl(self.query))


@dataclass
class Reply:
    status: int
    body: object = None                 # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                  # seconds to wait before answering (a slow platform)


class FakeServer:
    """A loopback HTTP/1.1 server in a thread. Subclasses implement handle(request) -> Reply."""

    origin = ""         # the remote origin this server stands in for, e.g. https://api.twitter.com

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.hold_route: str | None = None
        self.hold_limit = HOLD_LIMIT
        self.held = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def hold(self, route: str, limit: float = HOLD_LIMIT) -> None:
        """Hold the next request of `route` (e.g. "POST /2/tweets") until `release` is set, `limit` seconds at most."""
        self.hold_route, self.hold_limit = route, limit

    def received(self, route: str) -> list[Request]:
        return [r for r in self.requests if r.route == route]

    def answer(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            try:
                reply = self.handle(request)
            except Exception as err:  # noqa: BLE001 (a bug in the fake: answer it, so that the test shows it)
                reply = Reply(500, {"error": f"the fake failed: {err!r}"})
        if request.route == self.hold_route:
            self.hold_route = None
            self.held.set()
            self.release.wait(self.hold_limit)
        return reply

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError


def handler_for(fake: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(self.command, parts.path, parts.query, dict(self.headers.items()), body)
            reply = fake.answer(request)
            if reply.delay:
                threading.Event().wait(reply.delay)
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout) or was killed

        do_GET = do_POST = do_PUT = do_DELETE = do

        def log_message(self, *args) -> None:
            pass

    return Handler


class LoopbackAdapter(HTTPAdapter):
    """Carries requests for `origin` (e.g. https://api.twitter.com) to `target` (a fake's URL): the signed request as
    it is, only its URL rewritten. Lets loopback URLs through and refuses everything else."""

    def __init__(self, origin: str, target: str) -> None:
        super().__init__()
        self.origin, self.target = origin, target

    def send(self, request, **kwargs):
        if request.url.startswith(self.origin + "/"):
            request = request.copy()
            request.url = self.target + request.url[len(self.origin):]
        elif urlsplit(request.url).hostname not in LOOPBACK:
            raise requests.ConnectionError(f"the test refused a request beyond 127.0.0.1: {request.url}")
        return super().send(request, **kwargs)


def route_session(session: requests.Session, origin: str, target: str) -> None:
    """Every request of `session` for `origin` goes to `target`; any other non-loopback request fails."""
    adapter = LoopbackAdapter(origin, target)
    session.mount("https://", adapter)
    session.mount("http://", adapter)


def guard_network(monkeypatch) -> None:
    """Fail any connection or name lookup beyond 127.0.0.1 in this process."""
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise ConnectionRefusedError(f"the test refused a connection beyond 127.0.0.1: {address}")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK and host is not None:
            raise socket.gaierror(f"the test refused a name lookup beyond 127.0.0.1: {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
