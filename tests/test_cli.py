"""The CLI as a user runs it: errors are one clear line, never a traceback."""

import asyncio
import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from chatbot.app import open_log
from chatbot.cli import main
from chatbot.config import load_settings
from model.sample import Sampler
from model.tokenizer import GPT2_VOCAB
from storage import Database
from tests.conftest import PROVERBS, ROOT
from tests.test_base import tf_folder


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_corpus_stats(capsys):
    code, out, _ = run(capsys, "corpus", "stats", str(PROVERBS))
    assert code == 0
    assert "blocks:        909" in out and "words:         15,076" in out
    assert "fit a tweet:   909 of 909 (100%)" in out and "longest block: #849" in out


def test_bad_corpus_is_one_line(capsys, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"one\n==========\nna\xefve\n")
    code, _, err = run(capsys, "corpus", "stats", str(bad))
    assert code == 1 and err.strip() == (f"proverbot: error: {bad}, line 3: not valid UTF-8 (byte 0xef); convert the "
                                         "file to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`.")


def test_generate_without_a_model(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--checkpoint-dir", str(tmp_path))
    assert code == 1 and "No trained model" in err and "proverbot train" in err


def test_generate_unknown_run_lists_runs(capsys, trained_run):
    code, _, err = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), "--run-name", "nope")
    assert code == 1 and "No trained run 'nope'" in err and "(tiny)" in err


def test_generate_candidates_is_reproducible(capsys, trained_run):
    argv = ["generate", "--checkpoint-dir", str(trained_run.parent), "--count", "3", "--seed", "7", "--length", "30"]
    code, first, err = run(capsys, *argv)
    assert code == 0 and "3 candidates" in err
    assert len(first.strip().split("\n====================\n")) == 3
    assert run(capsys, *argv)[1] == first


def test_generated_candidates_are_logged(capsys, trained_run):
    code, out, err = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), "--count", "2",
                         "--seed", "3", "--prefix", "my son", "--length", "20")
    assert code == 0 and "logged as generation #1" in err
    code, history, _ = run(capsys, "history", "--kind", "candidates", "--json")
    rows = json.loads(history)
    usable = [row["text"] for row in rows if row["usable"]]
    assert sorted(usable) == sorted(out.strip().split("\n====================\n"))
    code, history, _ = run(capsys, "history", "--json")
    (generation,) = json.loads(history)
    assert generation["platform"] == "cli" and generation["prefix"] == "my son" and generation["status"] == "ok"
    assert generation["run_name"] == "tiny" and generation["seed"] == 3


@pytest.mark.parametrize("command", ["generate", "tweet"])
def test_a_prefix_holding_the_separator_is_refused_before_logging(capsys, trained_run, command):
    code, out, err = run(capsys, command, "--checkpoint-dir", str(trained_run.parent), "--prefix", "a ========== b")
    assert (code, out) == (1, "")
    message = "The prefix contains the separator line ========== that ends a text; leave it out."
    assert err == f"proverbot: error: {message}\n"
    assert asyncio.run(generations()) == []


def test_a_generate_interrupted_by_ctrl_c_is_logged_failed(capsys, monkeypatch, trained_run):
    """Ctrl-C (a real SIGINT) while the model samples: exit status 130, and the generation ends failed, not pending."""
    settled = threading.Event()
    candidates, fail_generation = Sampler.candidates, Database.fail_generation

    def interrupted(self, request):
        os.kill(os.getpid(), signal.SIGINT)     # the user presses Ctrl-C while the model samples
        settled.wait(60)                        # the sample finishes after the log has been told
        return candidates(self, request)

    async def failed(self, *args, **kwargs):
        await fail_generation(self, *args, **kwargs)
        settled.set()

    monkeypatch.setattr(Sampler, "candidates", interrupted)
    monkeypatch.setattr(Database, "fail_generation", failed)
    code, out, err = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), "--count", "2")
    assert (code, out, err) == (130, "", "proverbot: interrupted\n")
    (generation,) = asyncio.run(generations())
    assert (generation.status, generation.error) == ("failed", "interrupted while sampling (CancelledError)")


def test_a_generation_left_pending_is_failed_at_start(capsys, trained_run):
    """A process that died while sampling leaves its generation pending. A command settles only one older than the
    longest a request can take (a running bot may be sampling the other); the bot's start settles them all."""
    settings = load_settings()
    old, recent = asyncio.run(record_pending(settings, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)))
    code, _, _ = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), "--count", "1", "--length", "5")
    assert code == 0
    statuses = {g.id: (g.status, g.error) for g in asyncio.run(generations())}
    assert statuses[old] == ("failed", "proverbot stopped while sampling")
    assert statuses[recent] == ("pending", None)

    async def start_the_bot():
        await (await open_log(settings)).close()

    asyncio.run(start_the_bot())
    assert [(g.status, g.error) for g in asyncio.run(generations())] == [
        ("failed", "proverbot stopped while sampling"), ("failed", "proverbot stopped while sampling"), ("ok", None)]


async def record_pending(settings, *times) -> list[int]:
    db = Database(settings.database_url)
    await db.start(recover=False)
    try:
        return [await db.record_generation("discord", prefix="thou", at=at) for at in times]
    finally:
        await db.close()


async def generations():
    """Every generation in the test's log, oldest first (the log is not settled by reading it)."""
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start(recover=False)
    try:
        return list(reversed(await db.history("generations")))
    finally:
        await db.close()


def test_generate_raw_samples_to_a_file(capsys, trained_run, tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("an older file\n")
    code, _, err = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), "--nsamples", "4",
                       "--prefix", "my son", "--length", "10", "--destination-path", str(target))
    assert code == 0 and "Wrote 4 samples" in err
    samples = target.read_text().strip().split("\n====================\n")
    assert len(samples) == 4 and all(s.startswith("my son") for s in samples)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []    # no partial file left


@pytest.mark.parametrize("mode", [["--nsamples", "2"], ["--count", "2"]])
def test_a_generate_that_fails_leaves_the_destination_as_it_was(capsys, trained_run, tmp_path, mode):
    """The destination is written at once, at the end: a failure after it was opened leaves the old file whole."""
    target = tmp_path / "out.txt"
    target.write_text("an older file\n")
    code, out, err = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), *mode, "--prefix",
                         "a\n==========\nb", "--destination-path", str(target))
    assert (code, out) == (1, "") and err.startswith("proverbot: error: The prefix contains the separator line")
    assert target.read_text() == "an older file\n"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != "log.db") == ["out.txt"]


@pytest.fixture
def our_log_levels():
    """The CLI sets its loggers' levels; they are put back after the test."""
    loggers = [logging.getLogger(name) for name in ("proverbot", "model", "chatbot", "storage")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


@pytest.mark.parametrize("argv, level", [
    (["config"], logging.WARNING),
    (["-v", "config"], logging.INFO),
    (["config", "-v"], logging.INFO),
    (["config", "--json", "-vv"], logging.DEBUG),
    (["db", "-v", "upgrade"], logging.INFO),
    (["db", "upgrade", "-vv"], logging.DEBUG),
    (["history", "-vvv"], logging.DEBUG),
])
def test_verbose_before_or_after_any_command(capsys, our_log_levels, argv, level):
    assert run(capsys, *argv)[0] == 0
    assert {logging.getLogger(name).level for name in ("proverbot", "model", "chatbot", "storage")} == {level}


def test_info_lines_only_with_v(capsys, caplog, our_log_levels, trained_run):
    caplog.set_level(logging.DEBUG)
    argv = ["generate", "--checkpoint-dir", str(trained_run.parent), "--count", "1", "--length", "5"]
    assert run(capsys, *argv)[0] == 0
    assert [record.name for record in caplog.records if record.name.startswith(("model", "chatbot"))] == []
    assert run(capsys, *argv, "-v")[0] == 0
    assert f"loaded run {trained_run.name}" in caplog.text


def test_the_default_output_is_the_answer(trained_run, tmp_path):
    """The real console script: candidates on stdout, the one summary line on stderr; no log line, no timestamp."""
    command = [sys.executable, "-m", "chatbot.cli", "generate", "--checkpoint-dir", str(trained_run.parent),
               "--count", "1", "--length", "5", "--seed", "2"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"\[tiny \S+ on cpu: 1 candidate from \d+ samples in [\d.]+s.*; logged as generation #1\]\n",
                        done.stderr), done.stderr


def test_bare_proverbot_prints_the_help_and_fails_as_a_usage_error(capsys):
    code, out, err = run(capsys)
    assert (code, out) == (2, "") and err.startswith("usage: proverbot") and "commands:" in err
    assert "Exit status: 0 done, 1 failed, 2 bad command line" in " ".join(err.split())


def test_tweet_and_post_help_name_the_exit_codes(capsys):
    for command in ("tweet", "post"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "3 the posting quota is used up, 4 nothing to post" in " ".join(out.split())


def test_sigterm_while_run_trains_the_default_saves_and_exits_143(tmp_path):
    """`proverbot run` on a fresh machine trains the embedded default first; `docker stop` then (SIGTERM) saves a
    checkpoint and exits 143 instead of starting the bot (which, reading an empty stdin, would end with 0)."""
    env = {**os.environ, "PROVERBOT_CHECKPOINT_DIR": str(tmp_path / "ck"), "PROVERBOT_CORPUS": str(PROVERBS),
           "PROVERBOT_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    code, output = signalled_when(["run"], env, tmp_path, r"\| *[1-9]\d*/\d+ \[", signal.SIGTERM)
    assert code == 143, output
    assert re.search(r"Terminated \(SIGTERM\): saving a checkpoint at step \d+", output), output
    assert "(terminated)" in output and output.rstrip().endswith("proverbot: stopped (SIGTERM)")
    assert json.loads((tmp_path / "ck" / "default" / "proverbot.json").read_text())["step"] >= 1


def signalled_when(argv: list[str], env: dict, cwd, pattern: str, signum: int) -> tuple[int, str]:
    """`proverbot ARGV` in a child process (stdin empty), sent `signum` once its output (stdout and stderr; each
    progress bar update is a line) matches `pattern`: its exit status and output. Read by a thread, within bounds."""
    command = [sys.executable, "-m", "chatbot.cli", *argv]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output, ended, deadline = [], False, time.monotonic() + 180
    while not ended and not re.search(pattern, "".join(output)) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=1)
            ended = line is None
            output.append(line or "")
    process.send_signal(signum)
    try:
        process.wait(timeout=120)
    finally:
        process.kill()
    if not ended:
        output += iter(lambda: lines.get(timeout=10), None)
    return process.returncode, "".join(output)


@pytest.mark.parametrize("option, value, message", [
    ("--temperature", "5", "temperature must be more than 0 and at most 2.0 (got 5)"),
    ("--temperature", "0", "temperature must be more than 0 and at most 2.0 (got 0)"),
    ("--top-k", "-3", "top_k must be 0 (off) or more (got -3)"),
    ("--top-p", "1.5", "top_p must be between 0 (off) and 1 (got 1.5)"),
])
def test_sampling_parameters_out_of_range(capsys, trained_run, option, value, message):
    code, _, err = run(capsys, "generate", "--checkpoint-dir", str(trained_run.parent), option, value)
    assert code == 1 and f"Bad sampling parameters: {message}." in err


def test_bad_setting_in_environment(capsys, monkeypatch):
    monkeypatch.setenv("PROVERBOT_COUNT", "lots")
    code, _, err = run(capsys, "config")
    assert code == 1 and "Bad setting count (environment PROVERBOT_COUNT): Input should be a valid integer" in err


def test_config_lists_every_knob(capsys):
    code, out, _ = run(capsys, "config")
    assert code == 0 and "PROVERBOT_DATABASE_URL" in out and "PROVERBOT_CHECKPOINT_DIR" in out


def test_import_then_generate(capsys, tmp_path):
    folder = tf_folder(tmp_path)
    code, out, _ = run(capsys, "import", str(folder), "--checkpoint-dir", str(tmp_path / "ck"),
                       "--corpus", str(PROVERBS))
    assert code == 0 and "Imported" in out
    assert (tmp_path / "ck" / "124M" / "model.safetensors").is_file()
    code, _, err = run(capsys, "import", str(folder), "--checkpoint-dir", str(tmp_path / "ck"))
    assert code == 1 and "already exists" in err
    code, out, _ = run(capsys, "generate", "--checkpoint-dir", str(tmp_path / "ck"), "--nsamples", "1",
                       "--length", "5", "--seed", "1")
    assert code == 0 and out.strip()


def test_import_of_a_non_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, "import", str(GPT2_VOCAB), "--checkpoint-dir", str(tmp_path))
    assert code == 1 and "hparams.json" in err


def test_hub_base_fails_fast_without_network(tmp_path):
    """The real console script; the hub is pointed at a closed local port (no traffic leaves the machine)."""
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "chatbot.cli", "train", "--corpus", str(PROVERBS), "--base", "gpt2",
               "--checkpoint-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Cannot download 'gpt2' (openai-community/gpt2): no network connection" in result.stderr
    assert "--base PATH" in result.stderr
