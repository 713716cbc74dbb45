"""Several runs at once (issue 15.3-4): each channel samples from its own run, the worker keeps the runs in use
within model_memory_mb, and a checkpoint that training saves while the bot serves is picked up by the next request.

Real parts throughout: two tiny runs trained in this session, the bot's own assembly (chatbot.app.open_pool, the
model worker), a real SQLite log, and the console's command handling.
"""

import asyncio
import io
import os
import shutil
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from chatbot import health
from chatbot.app import open_pool
from chatbot.config import load_settings
from chatbot.context import Context
from chatbot.core import BadRequest, Core, Defaults, ModelInfo
from chatbot.frontends.console import Console
from chatbot.publishers.dryrun import DryRunPublisher
from chatbot.scheduler import Scheduler
from model.errors import ModelError
from model.pool import MB, weights_bytes
from model.runinfo import META, WEIGHTS, checkpoint_id
from model.train import train
from model.worker import ModelWorker
from storage import Database
from tests.conftest import tiny_config
from tests.fakes.discord_api import CHANNEL_ID, GUILD_ID, MANAGE_GUILD, FakeDiscord, Focused
from tests.fakes.slack_api import CHANNEL, fake_slack
from tests.test_discord import start_bot, stop_bot
from tests.test_slack import command, make_bot
from tests.test_scheduler import START, Announcements, FakeClock

DEFAULTS = Defaults(count=2, length=12, batch_size=4)


@pytest.fixture(scope="session")
def second_run(tmp_path_factory) -> Path:
    """Another tiny run, of other weights than the session's `trained_run`."""
    result = train(tiny_config(tmp_path_factory.mktemp("second"), run_name="second", seed=7, steps=20), progress=False)
    return result.folder


@pytest.fixture
def runs(trained_run, second_run, tmp_path) -> Path:
    """A checkpoint folder of two runs: alpha (the session's tiny run, the default) and beta."""
    folder = tmp_path / "checkpoints"
    shutil.copytree(trained_run, folder / "alpha")
    shutil.copytree(second_run, folder / "beta")
    return folder


@asynccontextmanager
async def bot(runs: Path, **settings):
    """The bot's model side as `proverbot run` assembles it, over the test's log: (core, pool)."""
    settings = load_settings(checkpoint_dir=runs, run_name="alpha", device="cpu", sample_dtype="float32", **settings)
    pool = open_pool(settings)
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start()
    loaded = []

    def load():
        loaded.append(pool.sampler(None))
        return pool

    try:
        async with ModelWorker(load, timeout=60) as worker:
            yield Core(db, worker, DryRunPublisher(), ModelInfo.of(loaded[0]), DEFAULTS, runs=pool), pool
    finally:
        await db.close()


def put(path: Path, data: bytes) -> None:
    """Replace a run's file as training does (a new file moved into place): the loaded weights map the old one."""
    path.with_suffix(".new").write_bytes(data)
    os.replace(path.with_suffix(".new"), path)


def channel(name: str) -> Context:
    return Context("discord", channel_id=name, user_id="mod", user_name="mod", server_id="guild")


async def rows(core: Core, ask) -> tuple[str, str]:
    """(run_name, checkpoint_id) of the generation row an ask() result was logged as."""
    generation = await core.db.get_generation(ask.generation_id)
    return generation.run_name, generation.checkpoint_id


async def test_two_channels_on_two_runs_sample_from_their_own(runs):
    async with bot(runs) as (core, pool):
        assert await core.use_run(channel("c2"), "beta") == "beta"
        first, second = await core.ask(channel("c1")), await core.ask(channel("c2"))
        assert await rows(core, first) == ("alpha", checkpoint_id(runs / "alpha"))
        assert await rows(core, second) == ("beta", checkpoint_id(runs / "beta"))
        assert checkpoint_id(runs / "alpha") != checkpoint_id(runs / "beta")
        # one request elsewhere: run:alpha in c2 overrides the channel's run, for that request only
        once = await core.ask(channel("c2"), run="alpha")
        again = await core.ask(channel("c2"))
        assert [(await rows(core, a))[0] for a in (once, again)] == ["alpha", "beta"]
        assert [r.name for r in pool.loaded()] == ["beta", "alpha"]        # both fit the default budget
        audit = await core.db.history("audit", limit=5)
        assert [(e.action, e.target, e.detail) for e in audit] == [("model.use", "discord/guild/c2", "beta")]
        assert [e.action for e in await core.db.history("moderation")] == ["model.use"]   # proverbot history too
        listed = await core.list_runs(channel("c2"))
        assert ([r.name for r in listed.runs], listed.here, listed.default) == (["alpha", "beta"], "beta", "alpha")
        assert [r.step for r in listed.runs] == [40, 20]


async def test_the_least_recently_used_run_is_unloaded_within_the_budget(runs):
    size = weights_bytes(runs / "alpha")
    assert size == weights_bytes(runs / "beta") and abs(size - (runs / "alpha" / WEIGHTS).stat().st_size) < 2**14
    budget = (size * 3 // 2) // MB + 1                  # room for one run, not two
    assert budget * MB < 2 * size
    async with bot(runs, model_memory_mb=budget) as (core, pool):
        assert [r.name for r in pool.loaded()] == ["alpha"]
        beta = await core.ask(channel("c1"), run="beta")
        assert [r.name for r in pool.loaded()] == ["beta"]             # alpha made room
        alpha = await core.ask(channel("c1"))
        assert [r.name for r in pool.loaded()] == ["alpha"]
        assert [(await rows(core, a))[0] for a in (beta, alpha)] == ["beta", "alpha"]
        status = await core.status()
        assert [r.name for r in status.loaded] == ["alpha"]


async def test_a_run_bigger_than_the_budget_is_one_clear_line(runs, tmp_path):
    async with bot(runs) as (core, pool):
        pool.budget = 1024                           # smaller than any run
        with pytest.raises(ModelError, match=r"^Run beta needs about \d+\.\d MB, more than model_memory_mb = "):
            await core.ask(channel("c1"), run="beta")
        assert [r.name for r in pool.loaded()] == ["alpha"]             # what was loaded still answers


async def test_a_checkpoint_saved_by_training_while_serving_is_picked_up_with_no_request_lost(runs):
    old = checkpoint_id(runs / "alpha")
    async with bot(runs) as (core, pool):
        training = asyncio.create_task(asyncio.to_thread(
            train, tiny_config(runs, run_name="alpha", steps=50, restore_from="latest"), progress=False))
        served = []
        while not training.done():                  # requests keep coming while training saves its checkpoint
            served.append(await core.ask(channel("c1")))
        new = (await training).step, checkpoint_id(runs / "alpha")
        assert served                               # at least one request ran while training
        assert new[0] == 50 and new[1] != old
        after = await core.ask(channel("c1"))
        ids = [(await rows(core, a))[1] for a in served]
        assert set(ids) <= {old, new[1]} and ids == sorted(ids, key=lambda i: i == new[1])   # old ones, then new
        assert await rows(core, after) == ("alpha", new[1])
        assert [(r.name, r.checkpoint_id) for r in pool.loaded()] == [("alpha", new[1])]
        failed = [g for g in await core.db.history("generations", limit=100) if g.status != "ok"]
        assert failed == []


async def test_a_damaged_new_checkpoint_keeps_the_old_weights_answering(runs, caplog):
    old = checkpoint_id(runs / "alpha")
    async with bot(runs) as (core, pool):
        put(runs / "alpha" / WEIGHTS, b"half a file")               # a damaged checkpoint
        meta = (runs / "alpha" / META).read_text().replace(old, "0123456789ab")
        put(runs / "alpha" / META, meta.encode())
        asked = await core.ask(channel("c1"))
        assert await rows(core, asked) == ("alpha", old)
        assert "does not load yet" in caplog.text and "model.safetensors is corrupt or incomplete" in caplog.text
        with pytest.raises(ModelError, match="model.safetensors is corrupt or incomplete"):
            await core.reload_run(channel("c1"))
        put(runs / "alpha" / WEIGHTS, (runs / "beta" / WEIGHTS).read_bytes())     # a good one replaces it
        put(runs / "alpha" / META, meta.replace("0123456789ab", checkpoint_id(runs / "beta")).encode())
        assert (await rows(core, await core.ask(channel("c1"))))[1] == checkpoint_id(runs / "beta")


async def test_weights_that_do_not_match_their_proverbot_json_are_not_served_under_its_id(runs):
    async with bot(runs) as (core, pool):
        put(runs / "alpha" / WEIGHTS, (runs / "beta" / WEIGHTS).read_bytes())   # saved: weights moved, json not yet
        with pytest.raises(ModelError, match="is being saved"):
            await core.reload_run(channel("c1"), "alpha")
        assert (await rows(core, await core.ask(channel("c1"))))[1] == checkpoint_id(runs / "alpha")


async def test_model_reload_forces_a_load_and_is_audited(runs):
    async with bot(runs) as (core, pool):
        assert await core.reload_run(channel("c1")) == ("alpha", checkpoint_id(runs / "alpha"),
                                                        checkpoint_id(runs / "alpha"))
        assert await core.reload_run(channel("c1"), "beta") == ("beta", "", checkpoint_id(runs / "beta"))
        audit = await core.db.history("audit", limit=5)
        assert [(e.action, e.target) for e in audit] == [("model.reload", "beta"), ("model.reload", "alpha")]


BAD_NAMES = ["../alpha", "/etc", "alpha/../beta", ".staging", "", "  ", "nope", "a\x00b", "C:\\x", "x" * 300,
             str(Path("..") / ".." / "etc" / "passwd")]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_run_names_are_refused_in_one_line(runs, name):
    async with bot(runs) as (core, pool):
        for attempt in (core.use_run(channel("c1"), name), core.ask(channel("c1"), run=name),
                        core.reload_run(channel("c1"), name)):
            with pytest.raises(ModelError) as refused:
                await attempt
            assert "\n" not in str(refused.value)
            assert "is not a run name" in str(refused.value) or "No trained run" in str(refused.value)
        assert await core.db.get_channel_run("discord", "c1", server_id="guild") is None
        assert await core.db.history("generations", limit=5) == []


async def test_the_console_speaks_the_same_words(runs):
    out = io.StringIO()
    lines = "/model list\n/model use beta\n/proverb count:1\n/model use ../x\n/model\n/model reload\n/status\n"
    async with bot(runs) as (core, pool):
        await Console(core, io.StringIO(lines), out, user="ada").run()
        generations = await core.db.history("generations", limit=5)
    text = out.getvalue()
    assert "* alpha: step 40" in text and "(default)" in text and "  beta: step 20" in text
    assert "This channel samples from run beta from now on" in text
    assert [g.run_name for g in generations] == ["beta"]
    assert "Sorry: '../x' is not a run name" in text
    assert "Sorry: Use /model list, /model use NAME or /model reload [NAME]." in text
    assert f"Reloaded run beta: checkpoint {checkpoint_id(runs / 'beta')} (unchanged)." in text
    assert "Loaded: beta (checkpoint" in text


async def test_with_an_inference_server_runs_are_the_servers_business(sampler):
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start()
    try:
        async with ModelWorker(lambda: sampler) as worker:
            model = ModelInfo("served", "", "remote", backend="http://gpu:8000")
            core = Core(db, worker, DryRunPublisher(), model, DEFAULTS)
            for attempt in (core.list_runs(channel("c1")), core.use_run(channel("c1"), "alpha"),
                            core.reload_run(channel("c1"))):
                with pytest.raises(BadRequest, match=r"samples from http://gpu:8000 \(sampler_url\)"):
                    await attempt
            assert (await core.ask(channel("c1"))).candidates         # the server's model answers as before
    finally:
        await db.close()


async def test_the_heartbeat_and_doctor_name_the_loaded_runs(runs, tmp_path):
    path = tmp_path / "proverbot.health"
    async with bot(runs) as (core, pool):
        await core.ask(channel("c1"), run="beta")
        beating = asyncio.create_task(health.beat(path, [], pool, interval=0.01))
        try:
            while not path.exists():
                await asyncio.sleep(0.01)
        finally:
            beating.cancel()
    alpha, beta = checkpoint_id(runs / "alpha"), checkpoint_id(runs / "beta")
    assert health.runs_line(path) == (f"Loaded runs in the running bot: beta (checkpoint {beta}), "
                                      f"alpha (checkpoint {alpha}).")
    path.write_text('{"time": 0, "connected": {}}')
    assert health.runs_line(path).startswith("Loaded runs: unknown (The last heartbeat is ")


async def test_the_daily_schedule_samples_from_its_channels_run(runs):
    here = Context("test", channel_id="c1", user_id="mod", user_name="mod")
    async with bot(runs) as (core, pool):
        await core.set_schedule(here, "09:00", at=START)
        await core.use_run(here, "beta")
        clock = FakeClock(START + timedelta(hours=2))
        [task] = await Scheduler(core, core.db, [Announcements()], clock).run_due()
        await clock.sleeping(1)                      # the batch is shown; its voting window runs
        task.cancel()
        [generation] = await core.db.history("generations", limit=5)
    assert (generation.platform, generation.channel_id, generation.run_name) == ("test", "c1", "beta")


async def test_discord_model_group_and_the_run_option(runs):
    async with bot(runs) as (core, pool), FakeDiscord() as fake:
        discord_bot, task = await start_bot(fake, core)
        try:
            admin, eve = fake.member("ada", permissions=MANAGE_GUILD), fake.member("eve")
            said = []
            for member, sub, options in [(eve, "use", {"run": "beta"}), (admin, "use", {"run": "../beta"}),
                                         (admin, "use", {"run": "beta"}), (eve, "list", {})]:
                interaction = await fake.command("model", options, member, subcommand=sub)
                await fake.until(lambda interaction=interaction: interaction.answered)
                said.append((interaction.ephemeral, interaction.callbacks[0]["data"]["content"]))
            assert said[0] == (True, "Sorry: Posting and schedules need the manage guild permission or the role "
                                     "poster.")
            assert said[1] == (True, "Sorry: '../beta' is not a run name: give a run's folder name, as /model list "
                                     "shows.")
            assert said[2] == (False, "This channel samples from run beta from now on (/model use NAME changes it).")
            assert said[3][0] is True and "beta: step 20" in said[3][1] and "← here" in said[3][1]
            assert await core.db.get_channel_run("discord", str(CHANNEL_ID), server_id=str(GUILD_ID)) == "beta"
            complete = await fake.command("proverb", {"run": Focused("AL")}, eve, kind=4)
            await fake.until(lambda: complete.callbacks)
            assert [c["value"] for c in complete.callbacks[0]["data"]["choices"]] == ["alpha"]
            for options in ({"count": 1}, {"count": 1, "run": "alpha"}):
                interaction = await fake.command("proverb", options, eve)
                await fake.until(lambda interaction=interaction: interaction.answered)
            generations = await core.db.history("generations", limit=5)
            assert [g.run_name for g in generations] == ["alpha", "beta"]         # newest first
        finally:
            await stop_bot(discord_bot, task)


async def test_slack_speaks_the_same_words(runs, monkeypatch):
    async with bot(runs) as (core, pool), fake_slack(monkeypatch) as fake:
        slack = make_bot(core)
        body, (_, ack) = await command(fake, slack, "/model", "use beta", "U0EVE")
        assert fake.answers(body)[0]["text"].startswith("Sorry: Posting and schedules are for workspace admins")
        _, (_, ack) = await command(fake, slack, "/model", "use ../beta", "U0ADMIN")
        assert ack["response_type"] == "ephemeral" and ack["text"].startswith("Sorry: '../beta' is not a run name")
        body, (_, ack) = await command(fake, slack, "/model", "use beta", "U0ADMIN")
        assert [(a["response_type"], a["text"]) for a in fake.answers(body)] == [
            ("in_channel", "This channel samples from run beta from now on (/model use NAME changes it).")]
        await command(fake, slack, "/proverb", "count:1", "U0EVE")
        await command(fake, slack, "/proverb", "count:1 run:alpha", "U0EVE")
        generations = await core.db.history("generations", limit=5)
        assert [(g.channel_id, g.run_name) for g in generations] == [(CHANNEL, "alpha"), (CHANNEL, "beta")]
