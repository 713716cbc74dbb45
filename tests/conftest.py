"""Shared fixtures: a throw-away tiny model trained once per test session on real proverbs."""

import os
import shutil
import signal
from pathlib import Path

import pytest
import pytest_asyncio

from model.train import make_config, train

ROOT = Path(__file__).resolve().parent.parent
PROVERBS = ROOT / "data" / "proverbs_clean.txt"

# A shell runs background jobs with SIGINT ignored, and children inherit that: Ctrl-C tests (in this process and in
# the children they start, which get the default back at exec) need the usual Python handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Small enough to train in seconds on 2 CPU cores, big enough to produce text.
TINY_TEST = dict(
    steps=40, batch_size=8, n_layer=2, n_embd=64, n_head=2, n_ctx=64, vocab_size=512, learning_rate=3e-3,
    val_every=20, patience=0, sample_every=1000, save_every=1000, print_every=10, eval_samples=0,
)


def tiny_config(tmp: Path, **options):
    return make_config("tiny", corpus=str(PROVERBS), checkpoint_dir=str(tmp), device="cpu", **{**TINY_TEST, **options})


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder of a tiny model; tests must not change it (copy it with `run_copy`)."""
    result = train(tiny_config(tmp_path_factory.mktemp("checkpoints"), run_name="tiny"), progress=False)
    return result.folder


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    folder = tmp_path / "checkpoints" / trained_run.name
    shutil.copytree(trained_run, folder)
    return folder


@pytest.fixture(scope="session")
def sampler(trained_run):
    from model.run import load_run
    from model.sample import Sampler

    return Sampler(load_run(trained_run))


@pytest.fixture(autouse=True)
def private_log(tmp_path, monkeypatch):
    """Each test logs to its own SQLite file, never to ./proverbot.db."""
    monkeypatch.setenv("PROVERBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")


@pytest.fixture(autouse=True)
def forgotten_secrets(monkeypatch):
    """The secrets a test's settings or publishers remember (chatbot.scrub) are masked in that test only: a short
    test password such as "secret" must not mask the word in the next test's messages."""
    from chatbot import scrub

    monkeypatch.setattr(scrub, "_masked", ())


@pytest_asyncio.fixture(loop_scope="function")
async def db():
    """The test's private log, started (migrated) and closed."""
    from storage import Database

    database = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await database.start()
    yield database
    await database.close()


@pytest_asyncio.fixture(loop_scope="function")
async def worker(sampler):
    """A real model worker serving the session's tiny model."""
    from model.worker import ModelWorker

    async with ModelWorker(lambda: sampler) as running:
        yield running
