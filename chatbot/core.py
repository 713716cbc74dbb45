"""The bot's workflow, free of any chat platform: ask → sample → show → vote → pick → publish → log.

Front ends (console, Discord, Slack) turn their events into these calls and the returned dataclasses into
messages; nothing here knows a platform's types. Every step is logged in storage, and every error a person can
act on is a ProverbotError whose str() is the message to show.

    core = Core(db, worker, DryRunPublisher(), model=ModelInfo("default", "2320050d41be", "cpu"))
    ctx = Context("console", channel_id="terminal", user_id="ada", user_name="ada")
    asked = await core.ask(ctx, prefix="thou shalt", count=3)
    await core.vote(ctx, asked.candidates[0].id, "👍")
    posted = await core.post(ctx)                # the top-voted candidate of the latest batch here

`generate()` is the one copy of the logged generation (record pending → sample → finish, or fail whatever stops
it): /proverb comes through Core.ask, the CLI's `generate` and `tweet` through chatbot.app.generate_logged.
"""

from __future__ import annotations

import asyncio
import math
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from chatbot.context import Context
from chatbot.limits import Limits
from chatbot.posting import Posted, Poster, PublisherUsage
from chatbot.retune import learned_from
from chatbot.publishers import Publisher
from chatbot.publishers.registry import Publishers
from model.candidates import CandidateBatch, SampleRequest, prefix_problem
from model.filters import blocked_key
from model.pool import LoadedRun, Pool
from model.runinfo import RunSummary, describe_runs
from proverbot_errors import ProverbotError
from storage import (
    BlockedWordInfo,
    CandidateInfo,
    Database,
    GenerationInfo,
    PostInfo,
    ScheduleError,
    ScheduleInfo,
    TallyRow,
    winner,
)
from storage.schedules import parse_time_of_day, zone

MAX_PREFIX = 200
TEMPERATURE = (0.1, 2.0)
COUNT = (1, 10)
LENGTH = (1, 200)
WINDOW = (1, 24 * 60)        # voting window of a schedule, minutes
MAX_WORD = 50                # characters of a word or phrase on the blocklist
WORD_MARKS = " -'\u2019"      # what a blocked word may hold besides letters, digits and their accents

UserNumber = int | float | str      # a number, or the text a user typed for one: in_range() checks it


class BadRequest(ProverbotError):
    """A parameter given by a user is out of range or malformed."""


class NothingToPost(ProverbotError):
    """No batch in this channel yet, or no candidate in it can be posted."""


@dataclass(frozen=True)
class ModelInfo:
    run_name: str
    checkpoint_id: str
    device: str
    separator: str = ""         # the line that ends a text in the run's corpus: a prefix may not contain it
    backend: str = "in-process"  # or the inference server's URL (model.remote.RemoteSampler)

    @classmethod
    def of(cls, sampler) -> ModelInfo:
        """What a model.candidates.BaseSampler serves."""
        return cls(sampler.run_name, sampler.checkpoint_id, sampler.device, sampler.separator, sampler.backend)


@dataclass(frozen=True)
class Defaults:
    """Sampling settings a user does not choose (chatbot.config.Settings has the same fields)."""

    temperature: float = 0.7
    count: int = 5
    length: int = 100
    top_k: int = 0
    top_p: float = 0.0
    batch_size: int = 20


@dataclass(frozen=True)
class ShownCandidate:
    id: int           # the candidate's id in storage
    number: int       # 1-based among the usable candidates of its batch: what /vote N means
    text: str


@dataclass(frozen=True)
class AskResult:
    generation_id: int
    candidates: tuple[ShownCandidate, ...]
    wanted: int
    samples: int
    seconds: float
    filtered: dict[str, int] = field(default_factory=dict)   # filter reason → how many samples it dropped

    @property
    def filtered_out(self) -> int:
        return sum(self.filtered.values())


@dataclass(frozen=True)
class RunList:
    runs: tuple[RunSummary, ...]    # every run of checkpoint_dir, by name
    here: str                       # this channel's run
    default: str                    # the bot's default run
    loaded: tuple[LoadedRun, ...]   # the runs in memory, most recently used first


@dataclass(frozen=True)
class Status:
    model: ModelInfo
    queue_length: int
    posts_last_24h: int         # on the default publisher
    publisher: str              # the default publisher's name
    publishers: tuple[PublisherUsage, ...] = ()     # every configured one, the default first: posts, quota
    note: str = ""              # why posts go nowhere, when they do (dry run)
    loaded: tuple[LoadedRun, ...] = ()              # the runs in memory, most recently used first (model.pool)
    learned_from: int | None = None                 # preference pairs the default run was last tuned on (votes)


class Worker(Protocol):
    """Where sampling runs, off the event loop: model.worker.ModelWorker (or anything shaped like it)."""

    async def sample(self, request: SampleRequest,
                     on_queued: Callable[[int], None] | None = None) -> CandidateBatch: ...

    def queue_length(self) -> int: ...

    async def call(self, work: Callable[[Pool], object]) -> object: ...


class Core:
    def __init__(self, db: Database, worker: Worker, publisher: Publisher | Publishers, model: ModelInfo,
                 defaults: Defaults | None = None, runs: Pool | None = None, limits: Limits | None = None) -> None:
        """runs: the model.pool.Pool the worker serves (several runs, /model); None: the worker's one sampler.
        limits: a member's cooldown and hourly cap (check_limits); None: no limits."""
        self.db = db
        self.worker = worker
        self.poster = Poster(db, publisher)
        self.publishers = self.poster.publishers    # every configured publisher, by name
        self.publisher = self.publishers.default
        self.model = model
        self.defaults = defaults or Defaults()
        self.runs = runs
        self.limits = limits or Limits()

    # --- ask -------------------------------------------------------------------------------------------------

    async def ask(self, ctx: Context, prefix: str = "", temperature: UserNumber | None = None,
                  count: UserNumber | None = None, length: UserNumber | None = None,
                  on_queued: Callable[[int], None] | None = None, *, run: str | None = None) -> AskResult:
        """Sample candidates in the model worker; the generation is logged pending before, settled after. run: the
        run to sample from (None: this channel's, set with /model use, else the default)."""
        request = self.request(prefix, temperature, count, length)
        request = replace(request, run=await self.run_for(ctx, run))
        generation, batch = await generate(self.db, self.worker, ctx, request, self.model_info(request.run), on_queued)
        return AskResult(generation.id, shown(generation), request.count, batch.samples, batch.seconds,
                         batch.rejected_summary())

    def request(self, prefix: str = "", temperature: UserNumber | None = None, count: UserNumber | None = None,
                length: UserNumber | None = None) -> SampleRequest:
        """The sampling request for these parameters (None: the default), or BadRequest saying which one is wrong.
        Front ends call it before acknowledging, to refuse bad input privately and at once."""
        d = self.defaults
        check_prefix(prefix, self.model.separator)
        temperature = d.temperature if temperature is None else in_range("temperature", temperature, *TEMPERATURE)
        count = d.count if count is None else int(in_range("count", count, *COUNT, whole=True))
        length = d.length if length is None else int(in_range("length", length, *LENGTH, whole=True))
        request = SampleRequest(prefix=prefix, temperature=temperature, count=count, length=length, top_k=d.top_k,
                                top_p=d.top_p, batch_size=d.batch_size)
        request.check()
        return request

    async def shown_in(self, candidate_id: int, message_id: str) -> None:
        """Remember the chat message that shows a candidate: reactions on it are votes, even after a restart."""
        await self.db.set_candidate_message(candidate_id, message_id)

    # --- votes -----------------------------------------------------------------------------------------------

    async def react(self, ctx: Context, message_id: str, emoji: str, added: bool = True) -> int | None:
        """A reaction added to (or removed from) a message: a vote for the candidate it shows, if it shows one.
        Returns that candidate's storage id, or None when the message shows no candidate."""
        candidate = await self.db.candidate_by_message(ctx.platform, message_id)
        if candidate is None or (added and candidate.vetoed_at is not None):     # a vetoed one's votes do not count
            return None
        await self.vote(ctx, candidate.id, emoji, added)
        return candidate.id

    async def clear_reactions(self, ctx: Context, message_id: str, emoji: str | None = None) -> int:
        """Every reaction (or every `emoji` reaction) removed from a message at once: those votes are withdrawn."""
        return await self.db.clear_votes(ctx.platform, message_id, emoji=emoji)

    async def vote(self, ctx: Context, candidate_id: int, emoji: str = "👍", added: bool = True) -> bool:
        """Record (or, with added=False, withdraw) ctx's vote; False when there was no vote to withdraw."""
        if added:
            await self.db.record_vote(candidate_id, ctx.user_id, emoji, user_name=ctx.user_name)
            return True
        return await self.db.remove_vote(candidate_id, ctx.user_id, emoji)

    async def votes(self, ctx: Context) -> list[TallyRow]:
        """The tally of the latest batch in this channel, usable candidates only, in batch order."""
        generation = await self._latest(ctx)
        return [row for row in await self.db.tally(generation.id) if row.usable]

    async def candidate_number(self, ctx: Context, number: int) -> int:
        """The storage id of usable candidate `number` (1-based) of the latest batch in this channel."""
        candidates = shown(await self._latest(ctx))
        if not 1 <= number <= len(candidates):
            raise BadRequest(f"There is no candidate {number} in the latest batch (it has 1 to {len(candidates)}).")
        return candidates[number - 1].id

    # --- post ------------------------------------------------------------------------------------------------

    async def post(self, ctx: Context, candidate_id: int | None = None, *, text: str | None = None,
                   to: str | None = None) -> Posted:
        """Publish the named candidate, or free `text`, or else the top-voted candidate of the latest batch here
        (ties: the earlier one; nobody voted: the first usable; never a vetoed one), on publisher `to` (x, mastodon,
        bluesky, dryrun; None: the channel's, else the default). Refused before anything is sent: UnknownPublisher,
        TooLong, AlreadyPosted / PostInProgress (storage), Unusable (filtered out, vetoed), QuotaReached.
        PostFailed: publishing failed and the candidate stays postable; PostUnknown: it may be online, a person
        checks (see chatbot/posting.py)."""
        if candidate_id is None and text is None:
            candidate_id = await self._pick(ctx)
        return await self.poster.post(ctx, candidate_id, text=text, to=to)

    async def _pick(self, ctx: Context) -> int:
        generation = await self._latest(ctx)
        best = winner(await self.db.tally(generation.id))
        if best is not None:
            return best.candidate_id
        usable = [c for c in generation.candidates if c.usable and c.vetoed_at is None]
        if not usable:
            raise NothingToPost("The latest batch here has no candidate left to post (filtered out or vetoed): ask "
                                "for more with /proverb.")
        return usable[0].id

    async def winner_of(self, generation_id: int) -> int:
        """The storage id of the top-voted usable candidate of that generation (ties: the earlier one; nobody
        voted: the first usable; never a vetoed one). NothingToPost when it has no such candidate."""
        rows = [row for row in await self.db.tally(generation_id) if row.usable and not row.vetoed]
        best = winner(rows)
        if best is not None:
            return best.candidate_id
        if not rows:
            raise NothingToPost(f"Generation #{generation_id} has no candidate left to post (filtered out or "
                                "vetoed).")
        return min(rows, key=lambda row: row.position).candidate_id

    async def unpost(self, ctx: Context, post_id: int) -> PostInfo:
        """Withdraw post `post_id`: deleted on its platform, then marked deleted in the log by ctx's user (see
        Poster.unpost: NotFound, NotWithdrawable, UnknownPublisher before anything is sent; UnpostFailed)."""
        return await self.poster.unpost(ctx, post_id)

    # --- schedule --------------------------------------------------------------------------------------------

    async def set_schedule(self, ctx: Context, time: str, timezone: str = "UTC", window_minutes: UserNumber = 60,
                           at: datetime | None = None, *, publisher: str | None = None) -> ScheduleInfo:
        """Post daily in this channel at `time` (HH:MM in `timezone`): a batch is sampled, open to votes for
        window_minutes, then the top-voted candidate is posted, on `publisher` (None: the channel's or the default;
        UnknownPublisher when it is not configured). Replaces the channel's schedule; audited."""
        try:
            time = parse_time_of_day(str(time)).strftime("%H:%M")
            zone(str(timezone))
        except ScheduleError as err:
            raise BadRequest(str(err)) from None
        window = int(in_range("window", window_minutes, *WINDOW, whole=True))
        if publisher is not None:
            self.publishers.get(publisher)
            publisher = publisher.strip().lower()
        return await self.db.set_schedule(ctx.platform, ctx.channel_id, time_of_day=time, timezone=str(timezone),
                                          window_minutes=window, server_id=ctx.server_id or "", publisher=publisher,
                                          set_by_id=ctx.user_id, set_by_name=ctx.user_name, at=at)

    async def schedule(self, ctx: Context) -> ScheduleInfo | None:
        """This channel's schedule (enabled or not), or None."""
        return await self.db.get_schedule(ctx.platform, ctx.channel_id, server_id=ctx.server_id or "")

    async def schedule_off(self, ctx: Context) -> bool:
        """Disable this channel's schedule; False when there was no enabled one. Audited."""
        return await self.db.disable_schedule(ctx.platform, ctx.channel_id, server_id=ctx.server_id or "",
                                              by_id=ctx.user_id, by_name=ctx.user_name)

    # --- limits and moderation (the front ends let only those who may post moderate) ---------------------------

    async def check_limits(self, ctx: Context, count: int) -> None:
        """chatbot.limits.TooSoon when ctx's member may not ask for `count` candidates now, saying when they may;
        nothing is sampled or logged. The front ends skip it for moderators."""
        await self.limits.check(self.db, ctx, count)

    async def veto(self, ctx: Context, candidate_id: int) -> CandidateInfo:
        """The candidate can never be posted (by /post, the votes or the schedule) and its votes stop counting.
        Final; audited. ModerationRefused when it is already vetoed, filtered out, or posted (/unpost first)."""
        return await self.db.veto(candidate_id, by_id=ctx.user_id, by_name=ctx.user_name)

    async def block(self, ctx: Context, word: str) -> tuple[str, bool]:
        """Put a word (or phrase) on the log's blocklist: every process drops candidates holding it from the next
        request on. Returns the word as stored and False when it was on the list already. Audited."""
        word = check_blocked_word(word)
        return word, await self.db.block_word(word, blocked_key(word), by_id=ctx.user_id, by_name=ctx.user_name)

    async def unblock(self, ctx: Context, word: str) -> str | None:
        """Take a word off the log's blocklist (any case or accents): the word as it was stored, or None when it
        was not on it. Audited. The config file's blocked_words stay."""
        word = check_blocked_word(word)
        return await self.db.unblock_word(blocked_key(word), by_id=ctx.user_id, by_name=ctx.user_name)

    async def blocklist(self) -> list[BlockedWordInfo]:
        """The log's blocklist, in order (the config file's blocked_words apply too, and are not listed)."""
        return await self.db.blocked_words()

    # --- history and status ----------------------------------------------------------------------------------

    async def history(self, ctx: Context, n: int = 10) -> list[PostInfo]:
        """The n most recent posts (any status), newest first."""
        n = int(in_range("n", n, 1, 50, whole=True))
        return await self.db.history("posts", limit=n)

    async def status(self) -> Status:
        usage = await self.poster.usage()
        runs = self.runs    # the pairs its default run learned from (None: never tuned, or its folder gone)
        pairs = await asyncio.to_thread(learned_from, runs.checkpoint_dir / runs.default) if runs else None
        return Status(self.model_info(), self.worker.queue_length(), usage[0].posts_last_24h, usage[0].name,
                      tuple(usage), self.publishers.note, self.runs.loaded() if self.runs else (), pairs)

    # --- runs (/model) ---------------------------------------------------------------------------------------

    async def run_for(self, ctx: Context, run: str | None = None) -> str | None:
        """The run a request in ctx's channel samples from: `run` when given (checked), else the channel's (/model
        use), else None: the default run."""
        if run is not None:
            return self.check_run(run)
        if self.runs is None or ctx.channel_id is None:
            return None
        return await self.db.get_channel_run(ctx.platform, ctx.channel_id, server_id=ctx.server_id or "")

    def check_run(self, name: str) -> str:
        """The run `name` names, or the error to show: a name that is no run of checkpoint_dir (a path, a typo)."""
        return self.pool().folder(str(name).strip()).name

    def pool(self) -> Pool:
        """The runs the worker serves, or the error to show where an inference server samples."""
        if self.runs is None and self.model.backend != "in-process":
            raise BadRequest(f"This bot samples from {self.model.backend} (sampler_url): which model answers is the "
                             "server's choice (sampler_model), so /model and run: are not available here.")
        if self.runs is None:
            raise BadRequest(f"This bot serves one model ({self.model.run_name}): /model and run: are not available.")
        return self.runs

    def model_info(self, run: str | None = None) -> ModelInfo:
        """What run `run` (None: the default) is, as far as known before sampling: its checkpoint id is the loaded
        one's, if it is loaded (a sample's own is logged with it, whatever loaded meanwhile)."""
        name = run or self.model.run_name
        loaded = next((r.checkpoint_id for r in self.runs.loaded() if r.name == name), None) if self.runs else None
        if name == self.model.run_name and loaded is None:
            return self.model
        return replace(self.model, run_name=name, checkpoint_id=loaded or "")

    async def list_runs(self, ctx: Context) -> RunList:
        """The runs of checkpoint_dir (name, step, base, date), this channel's and the loaded ones."""
        pool = self.pool()
        runs = await asyncio.to_thread(describe_runs, pool.checkpoint_dir)
        here = await self.run_for(ctx)
        return RunList(tuple(runs), here or pool.default, pool.default, pool.loaded())

    async def use_run(self, ctx: Context, name: str) -> str:
        """Make run `name` this channel's, from now on (stored in the log, audited); returns its name."""
        name = self.check_run(name)
        await self.db.set_channel_run(ctx.platform, ctx.channel_id or "", name, server_id=ctx.server_id or "",
                                      set_by_id=ctx.user_id, set_by_name=ctx.user_name)
        return name

    async def reload_run(self, ctx: Context, name: str | None = None) -> tuple[str, str, str]:
        """Load run `name`'s checkpoint now (None: this channel's run), in the worker, the old weights answering
        until then: (the run, its old checkpoint id or "", its new one). Audited."""
        name = self.check_run(name) if name is not None else await self.run_for(ctx) or self.pool().default
        old, new = await self.worker.call(lambda pool: pool.reload(name))
        await self.db.record_audit("model.reload", ctx.user_id, ctx.user_name, name, f"{old or '-'} -> {new}")
        return name, old, new

    async def _latest(self, ctx: Context) -> GenerationInfo:
        generation = await self.db.latest_generation(ctx.platform, ctx.channel_id)
        if generation is None:
            raise NothingToPost("No candidates in this channel yet: ask for some with /proverb.")
        return generation


async def generate(db: Database, worker: Worker, ctx: Context, request: SampleRequest, model: ModelInfo,
                   on_queued: Callable[[int], None] | None = None) -> tuple[GenerationInfo, CandidateBatch]:
    """Sample `request` in the worker, logged: the generation is recorded pending first, then finished with every
    candidate; whatever stops the sampling (an error, a timeout, Ctrl-C, the bot stopping) marks it failed and is
    raised again. Returns the finished generation and the batch (its generation_id set). The log's blocklist
    (/blocklist) is read now and applied with the config file's blocked_words: a word blocked a moment ago counts.

        generation, batch = await generate(db, worker, Context("cli", user_name="ada"), request, model)
    """
    blocked = tuple(word.word for word in await db.blocked_words())
    request = replace(request, blocked_words=(*request.blocked_words, *blocked))
    generation_id = await db.record_generation(
        ctx.platform, channel_id=ctx.channel_id, server_id=ctx.server_id, user_id=ctx.user_id,
        user_name=ctx.user_name, prefix=request.prefix, temperature=request.temperature, top_k=request.top_k,
        top_p=request.top_p, length=request.length, count=request.count, seed=request.seed,
        run_name=model.run_name, checkpoint_id=model.checkpoint_id, device=model.device)
    started = time.monotonic()
    try:
        batch = await worker.sample(request, on_queued=on_queued)
    except BaseException as err:
        await db.fail_generation(generation_id, failure(err), duration=time.monotonic() - started)
        raise
    generation = await db.finish_generation(
        generation_id, batch.usable + batch.rejected, duration=batch.seconds, samples=batch.samples,
        tokens=batch.tokens, run_name=batch.run_name or None, checkpoint_id=batch.checkpoint_id or None,
        device=batch.device or None)
    batch.generation_id = generation_id
    return generation, batch


def failure(err: BaseException) -> str:
    """What the log says about a generation that `err` stopped."""
    if isinstance(err, (KeyboardInterrupt, asyncio.CancelledError)):
        return f"interrupted while sampling ({type(err).__name__})"
    return str(err) or type(err).__name__


def shown(generation: GenerationInfo) -> tuple[ShownCandidate, ...]:
    usable = [c for c in generation.candidates if c.usable]
    return tuple(ShownCandidate(c.id, i, c.text) for i, c in enumerate(usable, 1))


def check_prefix(prefix: str, separator: str = "") -> None:
    """BadRequest when the prefix is not text, too long, holds a control character or the run's separator."""
    if not isinstance(prefix, str):
        raise BadRequest("The prefix must be text.")
    if len(prefix) > MAX_PREFIX:
        raise BadRequest(f"The prefix is {len(prefix)} characters long; at most {MAX_PREFIX} are allowed.")
    bad = next((ch for ch in prefix if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise BadRequest(f"The prefix contains a control character (U+{ord(bad):04X}); use plain text.")
    problem = prefix_problem(prefix, separator)
    if problem:
        raise BadRequest(problem)


def check_blocked_word(word: str) -> str:
    """The word or phrase a moderator blocks, its spaces tidied, or BadRequest: 1 to MAX_WORD characters of letters,
    digits, spaces, hyphens and apostrophes (no mention, link or markup can hide in one)."""
    word = " ".join(str(word).split())
    if not word:
        raise BadRequest("Which word? Give one, e.g. /blocklist add darn (a short phrase works too).")
    if len(word) > MAX_WORD:
        raise BadRequest(f"That word is {len(word)} characters long; a blocked word or phrase has at most {MAX_WORD}.")
    bad = next((ch for ch in word if not (ch.isalnum() or ch in WORD_MARKS
                                          or unicodedata.category(ch).startswith("M"))), None)
    if bad is not None:
        raise BadRequest(f"A blocked word holds letters, digits, spaces, hyphens and apostrophes only, not {bad!r} "
                         f"(U+{ord(bad):04X}).")
    if not any(ch.isalnum() for ch in word):
        raise BadRequest("A blocked word needs at least one letter or digit.")
    return word


def in_range(name: str, value: UserNumber, low: float, high: float, whole: bool = False) -> float:
    """value as a number within [low, high], or BadRequest naming the parameter and the range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g} (got {value!r}).") from None
    if math.isnan(number) or not low <= number <= high or (whole and number != int(number)):
        kind = "a whole number" if whole else "a number"
        raise BadRequest(f"{name} must be {kind} from {low:g} to {high:g} (got {value}).")
    return number
