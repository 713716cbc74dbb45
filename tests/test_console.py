"""The terminal front end, driven through its stdin and stdout: in process, and as `proverbot run` in a pipe."""

import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from chatbot.core import BadRequest, Core, Defaults, ModelInfo
from chatbot.frontends.common import parse_options
from chatbot.frontends.console import Console
from chatbot.publishers.dryrun import DryRunPublisher
from model.worker import ModelWorker
from storage import Database


async def drive(sampler, lines: str) -> str:
    """Run a Console over `lines` with the session's tiny model; return what it printed."""
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start()
    out = io.StringIO()
    try:
        async with ModelWorker(lambda: sampler) as worker:
            model = ModelInfo(sampler.run.name, sampler.run.checkpoint_id, "cpu")
            core = Core(db, worker, DryRunPublisher(), model, Defaults(length=20, batch_size=8))
            await Console(core, io.StringIO(lines), out, user="ada").run()
    finally:
        await db.close()
    return out.getvalue()


def test_parse_options():
    assert (parse_options(["prefix:thou shalt", "count:3"], ("prefix", "count"))
            == {"prefix": "thou shalt", "count": "3"})
    with pytest.raises(BadRequest, match="use key:value"):
        parse_options(["colour:red"], ("prefix",))
    with pytest.raises(BadRequest, match="given twice"):
        parse_options(["count:1", "count:2"], ("count",))


async def test_bad_input_prints_one_line_and_goes_on(sampler):
    output = await drive(sampler, """/vote 1
/proverb temperature:5
/proverb prefix:"unclosed
/proverb colour:red
/dance
/vote
/vote x
/history many
/status
/help
""")  # /vote before any /proverb; no /quit at the end: EOF ends it
    errors = [line for line in output.splitlines() if line.startswith("Sorry")]
    assert errors == [
        "Sorry: No candidates in this channel yet: ask for some with /proverb.",
        "Sorry: temperature must be a number from 0.1 to 2 (got 5).",
        "Sorry: Cannot read that command: No closing quotation.",
        ("Sorry: Cannot read 'colour:red': use key:value with a key among prefix, temperature, count, length, "
         'run (e.g. prefix:"thou shalt").'),
        "Sorry: Unknown command '/dance'; /help lists the commands.",
        "Sorry: Which candidate? Give its number in the latest batch, e.g. /vote 1.",
        "Sorry: 'x' is not a candidate number: give e.g. 1 (latest batch) or #12 (storage id).",
        "Sorry: n must be a number from 1 to 50 (got 'many').",
    ]
    assert "Traceback" not in output
    assert f"Model: {sampler.run.name}" in output and "posts in the last 24 h: dryrun 0." in output
    assert "No schedule here." in output
    assert "/history [n]" in output


def run_env(trained_run, database):
    return {**os.environ, "PROVERBOT_CHECKPOINT_DIR": str(trained_run.parent), "PROVERBOT_RUN_NAME": trained_run.name,
            "PROVERBOT_DATABASE_URL": f"sqlite+aiosqlite:///{database}", "PROVERBOT_DEVICE": "cpu",
            "PROVERBOT_BATCH_SIZE": "8", "PYTHONUNBUFFERED": "1"}


def test_proverbot_run_in_a_pipe(trained_run, tmp_path):
    """`printf ... | proverbot run` end to end: a real process, the trained tiny run, a private SQLite log."""
    database = tmp_path / "console.db"
    env = run_env(trained_run, database)
    commands = "/proverb count:2 length:20\n/vote 1\n/votes\n/post\n/post\n/history\n/quit\n"
    done = subprocess.run([sys.executable, "-m", "chatbot.cli", "run"], input=commands, capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    output = done.stdout
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in output + done.stderr
    first = re.search(r"^1\. \[#(\d+)\] (.+)$", output, re.MULTILINE)
    assert first, output
    candidate_id, text = int(first.group(1)), first.group(2)
    assert f"Voted for 1 [#{candidate_id}]." in output
    assert re.search(rf"^1\. \[#{candidate_id}\] 1 vote: ", output, re.MULTILINE)
    url = re.search(rf"^Posted \[#{candidate_id}\] on dryrun: (https://dry-run\.invalid/posts/\w+)$", output,
                    re.MULTILINE)
    assert url, output
    assert f"Sorry: already posted: {url.group(1)}" in output
    assert re.search(rf"^post #1 posted on dryrun .*: {re.escape(url.group(1))}$", output, re.MULTILINE)

    session = re.search(r"^proverbot console: .*; this session is (terminal-[0-9a-f]{6})\. ", output, re.MULTILINE)
    assert session, output
    with closing(sqlite3.connect(database)) as log:
        assert log.execute("select platform, channel_id, status, count, length from generations").fetchall() == [
            ("console", session.group(1), "ok", 2, 20)]
        assert log.execute("select candidate_id, emoji from votes where removed_at is null").fetchall() == [
            (candidate_id, "👍")]
        assert log.execute("select candidate_id, platform, status, url, text from posts").fetchall() == [
            (candidate_id, "dryrun", "posted", url.group(1), text)]
        assert log.execute("select action from audit_log").fetchall() == [("post",)]


@pytest.mark.parametrize("sig, status, message", [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "stopped (SIGTERM)")])
def test_signal_while_waiting_for_input_ends_at_once(trained_run, tmp_path, sig, status, message):
    """SIGINT or SIGTERM while the console waits on stdin: the worker and the log close, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "chatbot.cli", "run"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=run_env(trained_run, tmp_path / "console.db"))
    try:
        assert proc.stdout.readline().startswith("proverbot console:")
        proc.send_signal(sig)
        _, errors = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == status, errors
    assert f"proverbot: {message}" in errors and "Traceback" not in errors


async def test_post_and_schedule_name_their_publisher(sampler):
    output = await drive(sampler, """/proverb count:2
/post 1 to:myspace
/post 1 2
/post to:dryrun to:x
/post 1 to:DryRun
/schedule daily time:09:30 to:dryrun
/schedule daily time:09:30 to:bluesky
""")
    lines = output.splitlines()
    assert "Sorry: Cannot post there: 'myspace' is not one of x, mastodon, bluesky, dryrun." in output
    assert "Sorry: Give one candidate: its number in the latest batch, or #ID (and to:NAME for where)." in lines
    assert "Sorry: to is given twice." in lines
    assert re.search(r"^Posted \[#\d+\] on dryrun: https://dry-run\.invalid/posts/", output, re.MULTILINE)
    assert any(line.startswith("Daily at 09:30 UTC, voting open 60 min, posting on dryrun; next run") for line in lines)
    assert "Sorry: Cannot post there: bluesky is not configured." in output


async def test_a_bug_is_one_line_and_its_details_go_to_the_log(sampler, caplog, monkeypatch):
    async def broken(self):
        raise RuntimeError("the secret details")

    monkeypatch.setattr(Core, "status", broken)
    output = await drive(sampler, "/status\n/help\n")
    assert output.splitlines()[1] == "Sorry: unexpected RuntimeError (the bot's log has the details)."
    assert "the secret details" not in output and "/history [n]" in output           # and the console goes on
    failed, = [record for record in caplog.records if record.getMessage() == "/status failed"]
    assert failed.exc_info[1].args == ("the secret details",)
