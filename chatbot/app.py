"""Assembling proverbot from its settings: the log, the sampler, the model worker, the bot and its front ends.

    settings = load_settings()
    train_default_if_missing(settings)
    asyncio.run(run_bot(settings))                                      # `proverbot run`

    sampler = open_sampler(settings, run_name=None, checkpoint_dir=None, device=None)
    batch = asyncio.run(generate_logged(settings, sampler, request))   # `proverbot generate`, `proverbot tweet`

The command line (chatbot/cli.py, publish_cli.py) parses arguments and calls these; the workflow itself (ask,
vote, post, every step logged) is the core's (chatbot/core.py, chatbot/posting.py).
"""

import asyncio
import logging
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from functools import partial

from chatbot import health
from chatbot.config import Settings

log = logging.getLogger(__name__)

DEFAULT_RUN = "default"
MARGIN = 60.0       # seconds past the longest a request (or a post) can take, before the CLI calls it abandoned


# -- the model ------------------------------------------------------------------------------------------------

def open_sampler(settings: Settings, run_name: str | None, checkpoint_dir: str | None, device: str | None,
                 dtype: str | None = None):
    """A model.sample.Sampler of the run (default: settings' run_name, else the most recently trained); with
    sampler_url set, a model.remote.RemoteSampler of that server, which loads no weights: its training texts (to
    catch copies) come from sampler_corpus when set and no run is named, else from the run folder's corpus.txt.
    Only the in-process sampler imports torch."""
    from model.runinfo import find_run

    if settings.sampler_url:
        from model.remote import open_remote

        named = run_name or checkpoint_dir or not settings.sampler_corpus
        folder = find_run(checkpoint_dir or settings.checkpoint_dir, run_name or settings.run_name) if named else None
        return open_remote(sampler_server(settings), folder, settings.sampler_corpus, settings.blocked_words,
                           settings.max_tweet_length, settings.max_corpus_mb * 2**20)
    folder = find_run(checkpoint_dir or settings.checkpoint_dir, run_name or settings.run_name)
    return open_run(settings, folder, device, dtype)


def open_run(settings: Settings, folder, device: str | None = None, dtype: str | None = None):
    """A model.sample.Sampler of the run in `folder`, on `device` (default: settings')."""
    from model.base import pick_device
    from model.run import load_run
    from model.sample import Sampler

    run = load_run(folder, pick_device(device or settings.device), dtype or settings.sample_dtype)
    return Sampler(run, blocked_words=settings.blocked_words, max_length=settings.max_tweet_length)


def open_pool(settings: Settings):
    """The model.pool.Pool of checkpoint_dir's runs that the bot serves (default: settings' run_name, else the most
    recently trained), within model_memory_mb; None with sampler_url (the server's runs are its business). Loads
    nothing: the model worker's thread does."""
    from model.pool import Pool
    from model.runinfo import find_run

    if settings.sampler_url:
        return None
    default = find_run(settings.checkpoint_dir, settings.run_name).name

    def weights_id(path):
        from model.run import file_hash

        return file_hash(path)

    return Pool(settings.checkpoint_dir, partial(open_run, settings), settings.model_memory_mb * 2**20, default,
                weights_id)


def sampler_server(settings: Settings):
    """The model.remote.Server that sampler_url and the other sampler_* settings name."""
    from chatbot.config import ConfigError
    from chatbot.publishers.credentials import reveal
    from model.remote import Server

    if not settings.sampler_model:
        raise ConfigError("sampler_url is set but sampler_model is not: set PROVERBOT_SAMPLER_MODEL to the name the "
                          "server gives the model (vllm serve's --served-model-name; GET /v1/models lists them).")
    return Server(settings.sampler_url, settings.sampler_model, reveal(settings.sampler_api_key),
                  settings.sampler_timeout, settings.sampler_max_in_flight)


def training_report(result) -> str:
    """What a finished training says: where, how far, how well, and where its loss curves are."""
    from model.metrics import METRICS

    val = f", validation loss {result.val_loss:.3f}" if result.val_loss is not None else ""
    job = (f" for the whole job ({result.processes} processes, global batch {result.batch_size})"
           if result.processes > 1 else "")
    report = (f"Trained {result.folder} to step {result.step} ({result.stopped}): loss {result.train_loss:.3f}{val}, "
              f"{result.tokens_per_s:,.0f} tokens/s{job}.")
    if result.usable_rate is not None:
        report += (f"\nSamples at temperature 0.8: {result.usable_rate:.0%} usable, {result.copy_rate:.0%} exact "
                   "copies of a training text.")
    if (result.folder / METRICS).is_file():
        command = shlex.join(["proverbot", "plot", result.folder.name, "--checkpoint-dir", str(result.folder.parent)])
        report += (f"\nLoss curves: {result.folder / METRICS}; draw them with `{command}` (writes "
                   f"{result.folder / 'curves.png'}; --output picks another file).")
    return report


def train_default_if_missing(settings: Settings):
    """Train the embedded default into checkpoint_dir when it holds no run yet: the model.train.TrainResult (its
    `stopped` says whether Ctrl-C or SIGTERM cut it short), or None when a run was there or sampler_url is set."""
    from model.runinfo import list_runs

    if settings.sampler_url or list_runs(settings.checkpoint_dir):  # a remote sampler needs no weights here
        return None
    from model.train import make_config, train

    print(f"No trained model in {settings.checkpoint_dir}/ yet: training the embedded default on {settings.corpus} "
          "(a few minutes on a CPU; Ctrl-C saves and stops).", flush=True)
    cfg = make_config("tiny", corpus=str(settings.corpus), checkpoint_dir=str(settings.checkpoint_dir),
                      run_name=DEFAULT_RUN, device=settings.device, max_corpus_mb=settings.max_corpus_mb)
    result = train(cfg)
    print(training_report(result))
    return result


# -- the log --------------------------------------------------------------------------------------------------

async def open_log(settings: Settings):
    """The bot's log, started and this process registered (it beats until db.close()): what a stopped process left
    pending is settled (posts: unknown, with a warning; generations: failed), never a live one's."""
    from storage import Database

    db = Database(settings.database_url, heartbeat_s=settings.heartbeat_s)
    unknown = await db.start()
    try:
        await db.register_process()
    except BaseException:
        await db.close()
        raise
    if unknown:
        print(f"warning: {unknown} post(s) were in flight when proverbot last stopped and their outcome is unknown: "
              "check the account, then record it with `proverbot db settle-post ID posted|failed` "
              "(see `proverbot history --kind posts`).", file=sys.stderr)
    return db


@asynccontextmanager
async def cli_log(settings: Settings) -> AsyncIterator:
    """The log for one command, closed after. The command registers its process and beats like a bot, so a bot
    that starts meanwhile leaves its post in flight alone. Bots may be running on it, so only what is stale is settled
    (a process's that stopped beating; with no owner, what is older than the longest it could take): pending posts
    become unknown (with a warning), pending generations failed."""
    from chatbot.publishers.remote import longest_publish
    from storage import Database

    db = Database(settings.database_url, heartbeat_s=settings.heartbeat_s)
    await db.start(recover=False)
    try:
        await db.register_process()
        now = datetime.now(UTC)
        longest = longest_publish(settings.publish_timeout, settings.publish_attempts)
        stale = await db.mark_stale_posts_unknown(now - timedelta(seconds=longest + MARGIN))
        if stale:
            print(f"warning: {stale} post(s) were left pending by a run that stopped while posting; their outcome is "
                  "unknown: check the account, then record it with `proverbot db settle-post ID posted|failed` (see "
                  "`proverbot history --kind posts`).", file=sys.stderr)
        await db.fail_stale_generations(now - timedelta(seconds=settings.sample_timeout + MARGIN))
        yield db
    finally:
        await db.close()


async def generate_logged(settings: Settings, sampler, request):
    """Candidates for `request`, logged as a generation of platform "cli" by the core's workflow
    (chatbot.core.generate), in a model worker like the bot's: the event loop stays free, so Ctrl-C marks the
    generation failed at once, and a request takes at most sample_timeout. Returns the model.candidates.CandidateBatch,
    its generation_id set."""
    from chatbot.context import cli_context
    from chatbot.core import ModelInfo, generate
    from model.worker import ModelWorker

    model = ModelInfo.of(sampler)
    async with cli_log(settings) as db, ModelWorker(lambda: sampler, timeout=settings.sample_timeout) as worker:
        _, batch = await generate(db, worker, cli_context(), request, model)
    return batch


# -- the bot --------------------------------------------------------------------------------------------------

async def run_bot(settings: Settings) -> None:
    """The bot: the log, one model worker, the publishers, the daily scheduler and every front end whose
    credentials are set (Discord: DISCORD_TOKEN; Slack: SLACK_BOT_TOKEN with SLACK_APP_TOKEN or, in HTTP mode,
    SLACK_SIGNING_SECRET); with none, the terminal. Ends when a front end does
    (the console's /quit, a refused token) or on SIGTERM."""
    from chatbot.core import Core, Defaults, ModelInfo
    from chatbot.limits import Limits
    from chatbot.publishers.factory import build_publishers
    from chatbot.retune import Retuner
    from chatbot.scheduler import Scheduler
    from model.worker import ModelWorker

    pool = open_pool(settings)
    db = await open_log(settings)
    loaded = []

    def load():
        loaded.append(pool.sampler(None) if pool else open_sampler(settings, None, None, None))
        return pool or loaded[0]

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        async with ModelWorker(load, max_queue=settings.max_queue, timeout=settings.sample_timeout) as worker:
            model = ModelInfo.of(loaded[0])
            defaults = Defaults(**{field.name: getattr(settings, field.name) for field in fields(Defaults)})
            limits = Limits(settings.user_cooldown, settings.user_hourly_candidates)
            core = Core(db, worker, build_publishers(settings), model, defaults, runs=pool, limits=limits)
            frontends = chat_frontends(settings, core)
            helpers = [Scheduler(core, db, [frontend for frontend, _ in frontends]).run_forever()]
            if settings.retune_after_batches and pool:
                helpers.append(Retuner(core, [frontend for frontend, _ in frontends], settings.retune_after_batches,
                                       settings.device).run_forever())
            if settings.health_file:
                helpers.append(health.beat(settings.health_file, [frontend for frontend, _ in frontends], pool))
            await serve([serving for _, serving in frontends], helpers)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await db.close()


def chat_frontends(settings: Settings, core) -> list[tuple[object, Callable[[], Awaitable[None]]]]:
    """(front end, what serves it) for every chat platform with credentials (the settings discord_token, slack_*:
    DISCORD_TOKEN, SLACK_BOT_TOKEN, ... in the environment, a .env file or proverbot.toml); else the terminal. Every
    front end's settings are checked before any starts."""
    from chatbot.publishers.credentials import reveal

    frontends = []
    token = reveal(settings.discord_token)
    if token:
        from chatbot.frontends.discord_bot import DiscordBot
        from chatbot.frontends.discord_setup import DiscordOptions

        bot = DiscordBot(core, DiscordOptions.from_settings(settings))
        frontends.append((bot, partial(bot.serve, token)))
    slack_secrets = (settings.slack_bot_token, settings.slack_app_token, settings.slack_signing_secret)
    if any(reveal(secret) for secret in slack_secrets):
        from chatbot.frontends.slack_bot import SlackBot
        from chatbot.frontends.slack_setup import SlackOptions, SlackTokens

        options = SlackOptions.from_settings(settings)
        slack = SlackBot(core, options, SlackTokens.from_settings(settings, options.http))
        frontends.append((slack, slack.serve))
    if not frontends:
        from chatbot.frontends.console import Console

        console = Console(core)
        frontends.append((console, console.run))
    log.info("serving %s", ", ".join(frontend.platform for frontend, _ in frontends))
    return frontends


async def serve(frontends: list[Callable[[], Awaitable[None]]], helpers: list[Awaitable[None]]) -> None:
    """Run the front ends and their helpers until the first front end ends (or fails: its error is raised);
    everything else is then cancelled and awaited."""
    serving = [asyncio.create_task(start()) for start in frontends]
    background = [asyncio.create_task(coroutine) for coroutine in helpers]
    try:
        done, _ = await asyncio.wait(serving, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in serving + background:
            task.cancel()
        await asyncio.gather(*serving, *background, return_exceptions=True)
