"""`proverbot doctor`, `tweet`, `post` and `unpost`: publishing from the command line (and from cron).

proverbot doctor                       one cheap authenticated call per configured publisher, and GET /v1/models of
                                       sampler_url when set; says what works, never a secret; exit status 1 when one
                                       fails; with health_file set, the runs the running bot has loaded
proverbot tweet [--prefix ...]         sample, filter, pick one (random among the usable, or --pick best), post it
                                       through the same checks as the bot, log it
proverbot post --candidate ID | --text TEXT [--to NAME]    post by hand through the same checks
proverbot unpost ID                    withdraw a post: delete it on its platform, mark it in the log (as /unpost)

tweet and post exit with 0 when they posted, 1 on a failure (said on stderr, so cron mails the owner), and 3 (quota
used up) or 4 (nothing to post) when they skip, said on stdout: chatbot/exitcodes.py.

They log as platform "cli", through the bot's own workflow (chatbot/core.py's generate, chatbot/posting.py). What a
run that died left pending past the longest it can take is settled first, as the bot's start-up does
(chatbot.app.cli_log): a post becomes unknown, never re-posted; a generation failed.
"""

import asyncio
import random
import sys
from contextlib import asynccontextmanager

from chatbot import health
from chatbot.arguments import add_sampling_arguments, log_id, positive_int
from chatbot.config import Settings, load_settings
from chatbot.context import cli_context
from chatbot.exitcodes import EPILOG
from proverbot_errors import ProverbotError

# storage (SQLAlchemy) is imported by the commands that use it: `proverbot --help` starts no slower.
PICKS = ("random", "best")


class NothingToPost(ProverbotError):
    """Every candidate of the generation was filtered out or posted before: a skip, not a failure (exit status 4)."""


def add_commands(commands) -> None:
    """Register `doctor`, `tweet`, `post` and `unpost` on the CLI's subparsers."""
    doctor = commands.add_parser("doctor", help="check each configured publisher's credentials with one cheap call",
                                 description="One authenticated call per configured publisher (X: get_me; Mastodon: "
                                 "verify_credentials; Bluesky: login). Exit status 1 when one fails.")
    doctor.set_defaults(func=cmd_doctor)

    tweet = commands.add_parser("tweet", help="sample, pick and post one text (the tutorial's cron job)",
                                description="Sample candidates, keep the usable ones, pick one and post it through "
                                "the same checks as the bot (length, earlier posts, quota).", epilog=EPILOG)
    add_sampling_arguments(tweet)
    tweet.add_argument("--length", type=positive_int, help="most tokens per sample")
    tweet.add_argument("--count", type=positive_int, help="usable candidates to choose from (default: settings' count)")
    tweet.add_argument("--seed", type=int, help="the same seed gives the same samples and the same random pick")
    tweet.add_argument("--pick", choices=PICKS, default="random",
                       help="random: any usable candidate (default); best: the one with the most distinct words, "
                       "repeated words counting against it")
    tweet.add_argument("--to", help="publisher: x, mastodon, bluesky or dryrun (default: publish_to)")
    tweet.add_argument("--device", help="auto, cpu, cuda")
    tweet.set_defaults(func=cmd_tweet)

    post = commands.add_parser("post", help="post a logged candidate or a text by hand",
                               description="Post through the same checks as the bot: length, earlier posts, quota.",
                               epilog=EPILOG)
    what = post.add_mutually_exclusive_group(required=True)
    what.add_argument("--candidate", type=log_id, metavar="ID", help="a candidate's id in the log "
                      "(see `proverbot history --kind candidates`)")
    what.add_argument("--text", help="a text of your own")
    post.add_argument("--to", help="publisher: x, mastodon, bluesky or dryrun (default: publish_to)")
    post.set_defaults(func=cmd_post)

    unpost = commands.add_parser(
        "unpost", help="withdraw a published post: delete it on its platform and mark it in the log",
        description="Delete post ID on its platform (X, Mastodon, Bluesky or the dry run) and mark it withdrawn in "
                    "the log, with your login and the time; audited (`history --kind audit`). A post that is not "
                    "posted or is already withdrawn, or that the platform refuses to delete, is one line on stderr "
                    "(exit status 1), and nothing is marked.")
    unpost.add_argument("post_id", type=log_id, metavar="ID", help="the post's number (see `history --kind posts`)")
    unpost.set_defaults(func=cmd_unpost)


# -- doctor ---------------------------------------------------------------------------------------------------

def cmd_doctor(args) -> int:
    from chatbot.publishers.factory import assemble, configured_publishers

    settings = load_settings()
    sampler_failed = check_sampler(settings)
    if settings.health_file and not settings.sampler_url:   # the running bot's runs, as its heartbeat lists them
        print(health.runs_line(settings.health_file))
    real = configured_publishers(settings)
    publishers = assemble(real, settings)
    if not real:
        print("No publisher has credentials: posts go to the dry run (recorded with a fake URL, sent nowhere). "
              "Set TWITTER_* (or twitter_credentials_file), mastodon_* or bluesky_* settings: see README, Publishing.")
        return 1 if sampler_failed else 0
    failed = asyncio.run(check_all(real))
    print(f"Posts go to {publishers.default.name} unless told otherwise.")
    if publishers.note:
        print(f"Note: {publishers.note}.")
    if failed:
        print(f"{failed} of {len(real)} publishers failed the check.", file=sys.stderr)
    return 1 if failed or sampler_failed else 0


def check_sampler(settings) -> int:
    """With sampler_url set, whether the server answers GET /v1/models and lists sampler_model; 1 when not."""
    from chatbot.app import sampler_server

    if not settings.sampler_url:  # the in-process model is the run folder's: `proverbot generate` tries it
        return 0
    try:
        server = sampler_server(settings)
        served = server.models()
    except ProverbotError as err:
        print(f"model: FAILED: {err}")
        return 1
    if server.model not in served:
        print(f"model: FAILED: {server.where} does not serve {server.model!r} (sampler_model); it serves: "
              f"{', '.join(map(repr, served)) or 'nothing'}")
        return 1
    print(f"model: ok: {server.where} serves {server.model!r}")
    return 0


async def check_all(publishers) -> int:
    """verify() each publisher in turn, printing what works; returns how many failed."""
    failed = 0
    for publisher in publishers:
        print(f"{publisher.name}: {publisher.source}")
        try:
            print(f"{publisher.name}: ok: {await publisher.verify()}")
        except ProverbotError as err:
            failed += 1
            print(f"{publisher.name}: FAILED: {err}")
    return failed


# -- tweet and post -------------------------------------------------------------------------------------------

def cmd_post(args) -> int:
    from chatbot.publishers.factory import build_publishers

    settings = load_settings()
    publishers = build_publishers(settings)
    posted = asyncio.run(post_one(settings, publishers, args.candidate, args.text, args.to))
    report(posted)
    return 0


def cmd_unpost(args) -> int:
    from chatbot import replies
    from chatbot.publishers.factory import build_publishers

    settings = load_settings()
    publishers = build_publishers(settings)
    print(replies.unposted(asyncio.run(unpost_one(settings, publishers, args.post_id))))
    return 0


def cmd_tweet(args) -> int:
    from chatbot.app import generate_logged, open_sampler
    from chatbot.publishers.factory import build_publishers
    from model.candidates import SampleRequest

    settings = load_settings()
    publishers = build_publishers(settings)           # bad credentials stop it before any sampling
    publishers.get(args.to)
    count = args.count or settings.count
    request = SampleRequest(prefix=args.prefix, count=count, seed=args.seed, length=args.length or settings.length,
                            temperature=settings.temperature if args.temperature is None else args.temperature,
                            top_k=settings.top_k, top_p=settings.top_p, batch_size=settings.batch_size)
    request.check()
    asyncio.run(check_quota(settings, publishers, args.to))     # a skip for cron, before a minute of sampling
    sampler = open_sampler(settings, args.run_name, args.checkpoint_dir, args.device)
    sampler.check(request)                              # the prefix against the run's separator, before the log
    batch = asyncio.run(generate_logged(settings, sampler, request))
    print(f"{len(batch.usable)} usable candidates from {batch.samples} samples (generation #{batch.generation_id}).")
    posted = asyncio.run(post_a_candidate(settings, publishers, batch.generation_id, args.pick, args.seed, args.to))
    report(posted)
    return 0


async def post_one(settings: Settings, publishers, candidate_id: int | None, text: str | None, to: str | None):
    """Post one candidate or text through the checks; the posted record, or a ProverbotError."""
    async with opened_log(settings, publishers) as poster:
        return await poster.post(cli_context(), candidate_id, text=text, to=to)


async def unpost_one(settings: Settings, publishers, post_id: int):
    """Withdraw one post (chatbot.posting.Poster.unpost): the post as marked, or a ProverbotError."""
    async with opened_log(settings, publishers) as poster:
        return await poster.unpost(cli_context(), post_id)


async def check_quota(settings: Settings, publishers, to: str | None) -> None:
    """QuotaReached when the publisher's quota leaves no post now."""
    async with opened_log(settings, publishers) as poster:
        await poster.check_quota(cli_context(), to)


async def post_a_candidate(settings: Settings, publishers, generation_id: int, pick: str, seed: int | None,
                           to: str | None):
    """Post the picked usable candidate of the generation; one already posted (or being posted) is passed over for
    the next in the order of the pick. NothingToPost when none is left."""
    from storage import AlreadyPosted, PostInProgress

    async with opened_log(settings, publishers) as poster:
        generation = await poster.db.get_generation(generation_id)
        usable = [candidate for candidate in generation.candidates if candidate.usable]
        for candidate in in_pick_order(usable, pick, seed):
            try:
                return await poster.post(cli_context(), candidate.id, to=to)
            except (AlreadyPosted, PostInProgress):
                continue
        reason = "all of them were posted before" if usable else "the model gave no usable candidate"
        raise NothingToPost(f"Nothing to post from generation #{generation_id}: {reason}; try again, or change "
                            "--prefix, --temperature or --count.")


def in_pick_order(candidates: list, pick: str, seed: int | None) -> list:
    """random: shuffled (by --seed when given); best: by score, highest first, ties in batch order."""
    if pick == "best":
        return sorted(candidates, key=lambda candidate: -score(candidate.text))
    shuffled = list(candidates)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def score(text: str) -> int:
    """Distinct words minus repeated ones: a fuller text that does not stutter scores higher."""
    from model.filters import words

    all_words = words(text)
    distinct = len(set(all_words))
    return distinct - (len(all_words) - distinct)


@asynccontextmanager
async def opened_log(settings: Settings, publishers):
    """The log for one command (chatbot.app.cli_log: what a stopped run left pending is settled first), with a
    Poster on it. Closed after."""
    from chatbot.app import cli_log
    from chatbot.posting import Poster

    async with cli_log(settings) as db:
        yield Poster(db, publishers)


def report(posted) -> None:
    """On stdout: cron mails only what a failure prints on stderr."""
    print(f"Posted on {posted.platform}: {posted.url} (post #{posted.post_id})")
    print(posted.text)
