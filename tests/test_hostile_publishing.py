"""Hostile platforms and what reaches a person or the log, table-driven: add a row for each new finding.

A row names the platform, what its (loopback, fake) server does, and where we look: the output of `proverbot -vv
doctor` or `proverbot -vv post` (stdout, stderr and every log record, scrubbed by the filter that the CLI's logging
setup installs), or the SQLite log after a failed post (every row of every table: the post's last_error, the audit
trail). No secret may be there, plain or URL-encoded; the echo
must be there, masked, so a row cannot pass because the server's text never arrived.
"""

import io
import logging
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import pytest

from chatbot.cli import main
from chatbot.publishers import twitter
from chatbot.scrub import MASK, ScrubFilter, install_log_filter, remember, scrub
from tests.fakes.bluesky_api import FakeBluesky
from tests.fakes.echo import Echo
from tests.fakes.loopback import guard_network
from tests.fakes.mastodon_api import FakeMastodon
from tests.fakes.x_api import FakeX, sessions_to

# Secrets with characters that URL-encoding changes, so the plain and the encoded forms differ.
X_ENV = {"TWITTER_CONSUMER_KEY": "ckHOSTILE+key/0000001", "TWITTER_CONSUMER_SECRET": "csHOSTILE+secret/00002=",
         "TWITTER_ACCESS_TOKEN": "1234567890-atHOSTILE+token/03", "TWITTER_ACCESS_TOKEN_SECRET": "asHOSTILE+secret/04="}
MASTODON_TOKEN = "mastodon+TOKEN/hostile=05"
BLUESKY_PASSWORD = "hostile pass+word/06"
HANDLE = "proverbot.test"
SECRETS = [*X_ENV.values(), MASTODON_TOKEN, BLUESKY_PASSWORD]
CREATE_RECORD = "POST /xrpc/com.atproto.repo.createRecord"
DATABASE = "log.sqlite"         # in tmp_path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No credentials or proverbot.toml from the machine running the tests, no traffic beyond 127.0.0.1, one try
    per post (a retry would wait for real), the log in tmp_path."""
    for name in [*X_ENV, "PROVERBOT_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROVERBOT_PUBLISH_ATTEMPTS", "1")
    monkeypatch.setenv("PROVERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{DATABASE}")
    monkeypatch.chdir(tmp_path)
    guard_network(monkeypatch)


# -- the platforms, each configured as a user would, its fake echoing ------------------------------------------

@contextmanager
def hostile_x(monkeypatch):
    with FakeX(*X_ENV.values()) as fake:
        monkeypatch.setattr(twitter, "TimeoutSession", sessions_to(fake.url))
        for name, value in X_ENV.items():
            monkeypatch.setenv(name, value)
        yield fake


@contextmanager
def hostile_mastodon(monkeypatch):
    with FakeMastodon(MASTODON_TOKEN) as fake:
        monkeypatch.setenv("PROVERBOT_MASTODON_API_BASE_URL", fake.url)
        monkeypatch.setenv("PROVERBOT_MASTODON_ACCESS_TOKEN", MASTODON_TOKEN)
        yield fake


@contextmanager
def hostile_bluesky(monkeypatch):
    with FakeBluesky(HANDLE, BLUESKY_PASSWORD) as fake:
        monkeypatch.setenv("PROVERBOT_BLUESKY_HANDLE", HANDLE)
        monkeypatch.setenv("PROVERBOT_BLUESKY_APP_PASSWORD", BLUESKY_PASSWORD)
        monkeypatch.setenv("PROVERBOT_BLUESKY_BASE_URL", fake.url)
        yield fake


PLATFORMS = {"x": hostile_x, "mastodon": hostile_mastodon, "bluesky": hostile_bluesky}


# -- where we look ----------------------------------------------------------------------------------------------

def run(capsys, caplog, *argv) -> list[str]:
    """`proverbot -vv ARGV`, which must fail as one line, never a traceback: its stdout, stderr and log records."""
    code = main(["-vv", *argv])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err + caplog.text, out + err
    return [out, err, caplog.text]


def doctor_output(capsys, caplog) -> list[str]:
    return run(capsys, caplog, "doctor")


def post_output(capsys, caplog) -> list[str]:
    return run(capsys, caplog, "post", "--text", "a proverb")


def the_log(capsys, caplog) -> list[str]:
    run(capsys, caplog, "post", "--text", "a proverb")
    with sqlite3.connect(DATABASE) as db:
        [(status, last_error)] = db.execute("SELECT status, last_error FROM posts").fetchall()
        assert status == "failed"
        return [last_error, *db.iterdump()]


WHERE = {"doctor": doctor_output, "post": post_output, "the log": the_log}


@dataclass(frozen=True)
class Row:
    platform: str
    echo: Echo          # what the server answers, echoing the request
    where: str          # a key of WHERE

    def __str__(self) -> str:
        sent = "url-encoded" if self.echo.url_encoded else "as-sent"
        route = f"-{self.echo.route}" if self.echo.route else ""
        return f"{self.platform}-{self.echo.status}-{sent}{route}-{self.where}"


ROWS = [
    # X: the OAuth 1.0a header carries the consumer key and the access token, percent-encoded
    Row("x", Echo(403), "doctor"),
    Row("x", Echo(400, url_encoded=True), "doctor"),
    Row("x", Echo(403), "post"),
    Row("x", Echo(503, url_encoded=True), "post"),
    Row("x", Echo(400), "the log"),
    # Mastodon: the access token in the Authorization header of every call
    Row("mastodon", Echo(401), "doctor"),
    Row("mastodon", Echo(422, url_encoded=True), "doctor"),
    Row("mastodon", Echo(422), "post"),
    Row("mastodon", Echo(503, url_encoded=True), "post"),
    Row("mastodon", Echo(401, url_encoded=True), "the log"),
    # Bluesky: the app password in the login's body; after the login, the session's token in the header
    Row("bluesky", Echo(401), "doctor"),
    Row("bluesky", Echo(400, url_encoded=True), "doctor"),
    Row("bluesky", Echo(400), "post"),
    Row("bluesky", Echo(503, url_encoded=True), "post"),
    Row("bluesky", Echo(400, route=CREATE_RECORD), "post"),
    Row("bluesky", Echo(400, url_encoded=True), "the log"),
    Row("bluesky", Echo(400, url_encoded=True, route=CREATE_RECORD), "the log"),
]


def forms(secret: str) -> set[str]:
    """The secret as sent, URL-encoded, and URL-encoded twice (X's encoded OAuth header inside a URL)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote_plus(quote(secret, safe=""))}


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_no_secret_reaches_people_or_the_log(monkeypatch, capsys, caplog, row):
    caplog.set_level(logging.DEBUG)     # the libraries log what the server answered (tweepy: the whole body)
    with PLATFORMS[row.platform](monkeypatch) as fake:
        fake.echo = row.echo
        texts = WHERE[row.where](capsys, caplog)
        session_tokens = [fake.access] if row.platform == "bluesky" else []
    seen = "\n".join(texts)
    assert MASK in seen, seen
    for secret in [*SECRETS, *session_tokens]:
        for form in forms(secret):
            at = seen.find(form)
            assert at == -1, f"{form!r} is in ...{seen[max(0, at - 200):at + len(form) + 50]}..."


# -- the log filter and scrub() ----------------------------------------------------------------------------------

SECRET = "filterTEST+secret/07"


def failing(secret: str) -> BaseException:
    try:
        raise RuntimeError(f"the server said: {quote_plus(secret)}")
    except RuntimeError as err:
        return err


CARRIERS = {       # where a log record carries the secret -> the logging call
    "the message": lambda logger: logger.warning(f"token {SECRET} refused"),
    "an argument": lambda logger: logger.warning("token %s refused (%d)", SECRET, 401),
    "the exception": lambda logger: logger.error("refused", exc_info=failing(SECRET)),
    "an argument that does not fit the format": lambda logger: logger.warning("token %d", SECRET),
}


@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_log_record_carrying_a_remembered_secret_is_scrubbed(carrier):
    remember(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_filter()
        install_log_filter()            # once per handler
        CARRIERS[carrier](logging.getLogger("some.library"))
    finally:
        root.removeHandler(handler)
    assert [type(f) for f in handler.filters] == [ScrubFilter]
    written = stream.getvalue()
    assert MASK in written and "some.library" in written, written
    for form in forms(SECRET):
        assert form not in written


@pytest.mark.parametrize("secret, text, expected", [
    ("abcd-efgh-ijkl-mnop", "you sent password=abcd-efgh-ijkl-mnop!", f"you sent password={MASK}!"),
    ("p@ss word+/=08", "?q=p%40ss+word%2B%2F%3D08&x=1", f"?q={MASK}&x=1"),                  # quote_plus
    ("p@ss word+/=08", "/p%40ss%20word%2B/%3D08", f"/{MASK}"),                               # quote
    ("p@ss word+/=08", "?q=p%2540ss%2520word%252B%252F%253D08", f"?q={MASK}"),               # encoded twice
    ('quo"te\\09', 'body: {"password": "quo\\"te\\\\09"}', f'body: {{"password": "{MASK}"}}'),   # JSON-escaped
    ("basicSECRET10", "token cGFzc2Jhc2ljU0VDUkVUMTA", "token cGFzc2Jhc2ljU0VDUkVUMTA"),   # other text's base64
    ("basicSECRET10", "token YmFzaWNTRUNSRVQxMA==", f"token {MASK}=="),                       # its own base64
    ("short", "a short word", "a short word"),                                                # under MIN_LENGTH
])
def test_scrub_masks_a_remembered_secret_in_its_encodings(secret, text, expected):
    remember(secret, "")
    assert scrub(text) == expected
