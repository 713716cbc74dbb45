"""Sampling through an OpenAI-compatible server (model/remote.py): a real `transformers serve` on loopback with the
session's tiny run folder, and small sockets for the faults a real server will not stage (a hang, an answer that is
not JSON)."""

import io
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatbot.config import ConfigError, load_settings
from chatbot.context import Context
from chatbot.core import Core, Defaults, ModelInfo
from chatbot.frontends.console import Console
from chatbot.publishers.dryrun import DryRunPublisher
from model.candidates import SampleRequest
from model.errors import SamplingError
from model.remote import RemoteError, RemoteSampler, Server, open_remote
from model.runinfo import BLOCKS
from model.worker import ModelWorker
from storage import Database

KEY = "sk-remote-test-key-0123"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def served(trained_run):
    """A `transformers serve` of the tiny run on 127.0.0.1, stopped after the session: the Server that names it."""
    command = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip('transformers serve is not installed: pip install "transformers[serving]" (the test extra)')
    port = free_port()
    process = subprocess.Popen([command, "serve", str(trained_run), "--host", "127.0.0.1", "--port", str(port),
                                "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Server(f"http://127.0.0.1:{port}", str(trained_run), timeout=30)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if str(trained_run) in server.models():
                    break
            except RemoteError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"transformers serve did not start: {process.stderr.read1(2000).decode(errors='replace')}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def remote(served, trained_run) -> RemoteSampler:
    return open_remote(served, trained_run)


def down_server(model: str = "tiny", **options) -> Server:
    """A server that is not running: nothing listens on its port."""
    return Server(f"http://127.0.0.1:{free_port()}", model, **options)


@contextmanager
def listening_only():
    """A socket that takes connections (the kernel's backlog) and never answers: a server that hangs."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def answering(status: int, body: bytes, received: list | None = None):
    """An HTTP server that answers every request with `status` and `body` (and appends each request's JSON to
    `received`); a body with {auth} echoes the bearer header back, as a careless server's error page may."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if received is not None:
                received.append(json.loads(request))
            reply = body.replace(b"{auth}", self.headers.get("Authorization", "").encode())
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- samples ----------------------------------------------------------------------------------------------------

def test_candidates_come_back_usable_and_cut_at_the_separator(remote, trained_run):
    batch = remote.candidates(SampleRequest(count=3, length=30, temperature=1.0, seed=7))
    assert len(batch.usable) == 3 and batch.samples >= 3 and batch.tokens > 0
    texts = [c.text for c in batch.usable + batch.rejected]
    assert all(remote.separator not in text and text == text.strip() for text in texts)
    assert all(c.verdict.usable for c in batch.usable)
    assert (batch.run_name, batch.device) == (trained_run.name, remote.server.url)
    assert not remote.takes_n  # transformers serve ignores n: the rest came as one request each


def test_a_prefix_leads_every_candidate_and_an_over_long_one_is_refused_here(remote):
    batch = remote.candidates(SampleRequest(prefix="thou shalt", count=2, length=20, temperature=1.0))
    assert all(c.text.startswith("thou shalt") for c in batch.usable + batch.rejected)
    with pytest.raises(SamplingError, match=r"The prefix is \d+ tokens long; this model's context holds 62"):
        remote.candidates(SampleRequest(prefix="the " * 100))


def test_a_url_given_as_openais_base_url_reaches_the_same_server(served, trained_run):
    server = Server(served.url + "/v1/", served.model, timeout=30)
    assert served.model in server.models()
    assert open_remote(server, trained_run).candidates(SampleRequest(count=1, length=20, temperature=1.0)).usable


def test_copies_are_checked_against_the_run_folder_or_sampler_corpus(trained_run, tmp_path):
    blocks = (trained_run / BLOCKS).read_text(encoding="utf-8")
    from_folder = open_remote(down_server(), trained_run)
    assert from_folder.filter.check(from_folder.filter.blocks[0], set()).reason == "copy"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(blocks, encoding="utf-8")
    from_corpus = open_remote(down_server(), corpus=corpus)
    assert from_corpus.filter.blocks == from_folder.filter.blocks
    assert from_corpus.start == "\n==========\n" and from_folder.start == "=========="


def test_the_separator_id_goes_as_stop_token_ids_until_a_server_refuses_them(served, trained_run, caplog):
    sampler = open_remote(served, trained_run)
    assert sampler.stop_ids == [sampler.tokenizer.convert_tokens_to_ids(sampler.separator)]
    with caplog.at_level(logging.INFO, logger="model.remote"):
        for seed in (1, 2):     # transformers serve answers 422 "Unexpected fields": asked again without them
            assert len(sampler.candidates(SampleRequest(count=1, length=20, temperature=1.0, seed=seed)).usable) == 1
    assert not sampler.takes_stop_ids
    assert [record.getMessage() for record in caplog.records if "stop_token_ids" in record.getMessage()] == [
        f"the sampler at {served.url} takes no stop_token_ids: stopping at the separator's text only"]


def test_a_server_that_takes_stop_token_ids_gets_them_and_a_text_separator_sends_none(trained_run, tmp_path):
    completion = b'{"choices": [{"text": "the early bird sings"}], "usage": {"completion_tokens": 5}}'
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((trained_run / BLOCKS).read_text(encoding="utf-8"), encoding="utf-8")
    received = []
    with answering(200, completion, received) as url:      # vLLM takes the field
        from_folder = open_remote(Server(url, "tiny"), trained_run)
        from_folder.candidates(SampleRequest(count=1, length=5))
        from_corpus = open_remote(Server(url, "tiny"), corpus=corpus)    # the separator as text: no id to send
        from_corpus.candidates(SampleRequest(count=1, length=5))
    assert received[0]["stop_token_ids"] == from_folder.stop_ids and from_folder.takes_stop_ids
    assert from_corpus.stop_ids == [] and "stop_token_ids" not in received[-1]


# -- faults -----------------------------------------------------------------------------------------------------

def test_faults_are_one_clear_line(served, trained_run):
    request = SampleRequest(count=1, length=10)
    cases = [
        (down_server(), "cannot be reached (ConnectError: [Errno 111] Connection refused); is it running?"),
        (Server(served.url, "proverbs"), "refused /v1/completions: HTTP 400: Server is pinned to"),
    ]
    with listening_only() as hanging:
        cases.append((Server(hanging, "tiny", timeout=0.5), "did not answer within 0.5 s (sampler_timeout)."))
        for server, message in cases:
            with pytest.raises(RemoteError) as err:
                open_remote(server, trained_run).candidates(request)
            assert message in str(err.value) and "\n" not in str(err.value) and server.url in str(err.value)


def test_a_password_in_the_url_is_never_shown(trained_run):
    port = free_port()
    sampler = open_remote(Server(f"http://bot:hunter2-pw@127.0.0.1:{port}/v", "tiny"), trained_run)
    with pytest.raises(RemoteError) as err:
        sampler.candidates(SampleRequest(count=1, length=5))
    assert f"The sampler at http://127.0.0.1:{port}/v cannot be reached" in str(err.value)
    assert "hunter2" not in str(err.value) + sampler.backend + sampler.device


@pytest.mark.parametrize("status, body, message", [
    (200, b"<html>hello</html>", "answered /v1/completions with something that is not JSON."),
    (200, b'{"id": "x"}', "answered without choices[].text (KeyError('choices'))"),
    (200, b'{"choices": [{"text": 3}]}', "answered without choices[].text"),
    (200, b'{"choices": []}', "answered without choices[].text"),
    (503, b'{"error": {"message": "overloaded, try later"}}', "refused /v1/completions: HTTP 503: overloaded"),
    (500, b"boom: {auth}", "HTTP 500: boom: Bearer **********"),
    (401, b'{"detail": "bad key {auth}"}', "HTTP 401: bad key Bearer **********"),
    (422, b'{"detail": "prompt too long"}', "HTTP 422: prompt too long"),  # not about stop_token_ids: no retry
])
def test_a_reply_that_is_not_a_completion_is_one_line(trained_run, status, body, message):
    with answering(status, body) as url:
        with pytest.raises(RemoteError) as err:
            open_remote(Server(url, "tiny", api_key=KEY), trained_run).candidates(SampleRequest(count=1, length=5))
    assert message in str(err.value) and KEY not in str(err.value)


# -- the bot ----------------------------------------------------------------------------------------------------

async def test_a_failed_generation_is_logged_and_the_bot_keeps_serving(served, trained_run, db):
    sampler = open_remote(down_server(), trained_run)
    async with ModelWorker(lambda: sampler) as worker:
        core = Core(db, worker, DryRunPublisher(), ModelInfo.of(sampler), Defaults(length=20, count=2))
        ctx = Context("console", channel_id="terminal", user_id="ada", user_name="ada")
        with pytest.raises(RemoteError, match="is it running"):
            await core.ask(ctx)
        sampler.server = served            # the server is back
        asked = await core.ask(ctx)
        assert asked.candidates
    database = os.environ["PROVERBOT_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with closing(sqlite3.connect(database)) as log:
        rows = log.execute("select status, error, device from generations order by id").fetchall()
    assert [row[0] for row in rows] == ["failed", "ok"] and "is it running" in rows[0][1]
    assert rows[1][2] == served.url


async def test_the_console_says_the_fault_and_the_backend(trained_run):
    sampler = open_remote(down_server(), trained_run)
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start()
    out = io.StringIO()
    try:
        async with ModelWorker(lambda: sampler) as worker:
            core = Core(db, worker, DryRunPublisher(), ModelInfo.of(sampler), Defaults(length=20))
            await Console(core, io.StringIO("/proverb\n/status\n"), out, user="ada").run()
    finally:
        await db.close()
    lines = out.getvalue().splitlines()
    assert any(line.startswith("Sorry: The sampler at http://127.0.0.1:") and "is it running?" in line
               for line in lines)
    assert any(f"Model: tiny (checkpoint {sampler.checkpoint_id}) served by {sampler.server.url};" in line
               for line in lines)


# -- settings, wiring, doctor -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["ftp://gpu:8000", "gpu:8000", "http://", "http://gpu:8000 x"])
def test_a_sampler_url_that_is_not_http_is_refused_at_load(monkeypatch, url):
    monkeypatch.setenv("PROVERBOT_SAMPLER_URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == ("Bad setting sampler_url (environment PROVERBOT_SAMPLER_URL): expected an http:// or "
                              "https:// URL, e.g. http://gpu:8000.")


def test_open_sampler_picks_the_server_and_loads_no_weights(monkeypatch, trained_run):
    from chatbot.app import open_sampler
    from chatbot.scrub import scrub

    monkeypatch.setenv("PROVERBOT_SAMPLER_URL", "http://127.0.0.1:9/")
    with pytest.raises(ConfigError, match="sampler_url is set but sampler_model is not"):
        open_sampler(load_settings(), trained_run.name, str(trained_run.parent), None)
    monkeypatch.setenv("PROVERBOT_SAMPLER_MODEL", "proverbs")
    monkeypatch.setenv("PROVERBOT_SAMPLER_API_KEY", KEY)
    sampler = open_sampler(load_settings(), trained_run.name, str(trained_run.parent), None)
    assert isinstance(sampler, RemoteSampler) and not hasattr(sampler, "model")
    assert (sampler.server.url, sampler.server.model, sampler.server.api_key) == ("http://127.0.0.1:9", "proverbs", KEY)
    assert ModelInfo.of(sampler).backend == "http://127.0.0.1:9"
    assert KEY not in scrub(f"echoed {KEY}")  # the key is a secret the settings remember


def test_doctor_checks_the_sampler(monkeypatch, capsys, served):
    from chatbot.cli import main

    monkeypatch.setenv("PROVERBOT_SAMPLER_URL", served.url)
    monkeypatch.setenv("PROVERBOT_SAMPLER_MODEL", served.model)
    assert main(["doctor"]) == 0
    assert f"model: ok: {served.url} serves {served.model!r}" in capsys.readouterr().out
    monkeypatch.setenv("PROVERBOT_SAMPLER_MODEL", "proverbs")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"model: FAILED: {served.url} does not serve 'proverbs' (sampler_model); it serves: " in out
    monkeypatch.setenv("PROVERBOT_SAMPLER_URL", down_server().url)
    assert main(["doctor"]) == 1
    assert "is it running?" in capsys.readouterr().out



def test_a_bot_with_a_remote_sampler_loads_no_torch(trained_run):
    """The point of a remote sampler: `proverbot run` holds no weights, so it loads no torch (~400 MB): here a console
    bot asks a sampler that is down for a proverb, says why it has none, and quits."""
    child = "import sys\nfrom chatbot.cli import main\nmain(['run'])\nprint('torch loaded:', 'torch' in sys.modules)"
    env = os.environ | {"PROVERBOT_SAMPLER_URL": "http://127.0.0.1:9", "PROVERBOT_SAMPLER_MODEL": "tiny",
                        "PROVERBOT_CHECKPOINT_DIR": str(trained_run.parent), "PROVERBOT_RUN_NAME": trained_run.name}
    result = subprocess.run([sys.executable, "-c", child], input="/proverb\n/quit\n", env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Sorry: The sampler at http://127.0.0.1:9 cannot be reached" in result.stdout
    assert "torch loaded: False" in result.stdout
