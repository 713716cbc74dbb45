"""The terminal front end: the Discord commands, typed on stdin, answered on stdout.

    /proverb prefix:"thou shalt" temperature:0.9 count:3 length:60
    /vote 1        /unvote 1        /votes        /post [N] [to:x]        /history [n]        /status        /help        /quit
    /schedule daily time:09:30 timezone:Europe/Paris window:10        /schedule show        /schedule off

N is a candidate's number in the latest batch (as printed); #ID names a candidate by its storage id. Works with a
pipe as well as a terminal (`printf '/proverb\\n/post\\n' | proverbot run`); EOF ends like /quit. Bad input
prints one line starting with "error:" and the console goes on.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shlex
import sys
import threading
from typing import TextIO

from chatbot import replies
from chatbot.core import AskResult, BadRequest, Context, Core
from chatbot.frontends.common import (
    PROVERB_KEYS,
    SCHEDULE_USAGE,
    candidate_id,
    history_size,
    no_arguments,
    parse_options,
    post_options,
    schedule_options,
)
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

HELP = """Commands:
  /proverb [prefix:"text"] [temperature:0.1-2.0] [count:1-10] [length:1-200]   sample candidates
  /vote N, /unvote N      vote for (or withdraw from) candidate N of the latest batch (#ID: by storage id)
  /votes                  the tally of the latest batch
  /post [N] [to:NAME]     publish the top-voted candidate (ties: the earlier one), or candidate N (on NAME)
  /history [n]            the n most recent posts
  /status                 model, queue and posts in the last 24 hours
  /schedule daily time:HH:MM [timezone:Europe/Paris] [window:10] [to:NAME]   post the top-voted of a daily batch here
  /schedule show, /schedule off
  /help, /quit"""


class Quit(Exception):
    pass


class Console:
    platform = "console"

    def __init__(self, core: Core, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 user: str | None = None) -> None:
        self.core = core
        self.stdin, self.stdout = stdin, stdout
        user = user or getpass.getuser()
        self.ctx = Context(self.platform, channel_id="terminal", user_id=user, user_name=user)
        self.commands = {"/proverb": self.proverb, "/vote": self.vote, "/unvote": self.unvote, "/votes": self.votes,
                         "/post": self.post, "/history": self.history, "/status": self.status,
                         "/schedule": self.schedule, "/help": self.help, "/quit": self.quit, "/exit": self.quit}

    async def run(self) -> None:
        """Read and answer commands until /quit or end of input."""
        self.say(f"proverbot console: {self.core.model.run_name} on {self.core.model.device}, publishing to "
                 f"{self.core.publisher.name}. /help lists the commands.")
        lines = self.read_lines()
        while True:
            if self.stdin.isatty():
                self.say("> ", end="")
            line = await lines.get()
            if not line:
                return
            try:
                await self.handle(line)
            except Quit:
                return

    def read_lines(self) -> asyncio.Queue:
        """Lines of stdin, read by a daemon thread ("" at the end), so that a blocked read never holds up
        shutdown: Ctrl-C or SIGTERM ends the bot at once, even while the terminal waits for a line."""
        loop, lines = asyncio.get_running_loop(), asyncio.Queue()

        def read() -> None:
            while True:
                line = self.stdin.readline()
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
                except RuntimeError:  # the loop has closed: the console is over
                    return
                if not line:
                    return

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return lines

    async def handle(self, line: str) -> None:
        """Answer one line; every error becomes one line of output."""
        try:
            words = shlex.split(line)
            if not words:
                return
            command = self.commands.get(words[0].lower())
            if command is None:
                raise BadRequest(f"Unknown command {words[0]!r}; /help lists the commands.")
            await command(words[1:])
        except Quit:
            raise
        except ProverbotError as err:
            self.say(f"error: {replies.error(err)}")
        except ValueError as err:  # shlex: an unclosed quote
            self.say(f"error: cannot read that line: {err}")
        except Exception as err:
            log.debug("unexpected error", exc_info=True)
            self.say(f"error: unexpected {type(err).__name__}: {err}")

    def say(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.stdout, flush=True)

    # --- commands --------------------------------------------------------------------------------------------

    async def proverb(self, args: list[str]) -> None:
        options = parse_options(args, PROVERB_KEYS)
        self.say("Sampling...")
        result = await self.core.ask(self.ctx, on_queued=lambda n: self.say(f"Waiting in the queue: #{n}."),
                                     **options)
        self.show(result)

    def show(self, result: AskResult, note: str = "") -> None:
        for candidate in result.candidates:
            self.say(replies.candidate(candidate))
        self.say(replies.asked(result, "Vote with /vote N."))
        if note:
            self.say(note)

    async def vote(self, args: list[str], added: bool = True) -> None:
        number, chosen = await self.candidate(args)
        changed = await self.core.vote(self.ctx, chosen, added=added)
        if added:
            self.say(f"Voted for {number} [#{chosen}].")
        else:
            self.say(f"Removed your vote for {number} [#{chosen}]." if changed
                     else f"You had no vote on {number} [#{chosen}].")

    async def unvote(self, args: list[str]) -> None:
        await self.vote(args, added=False)

    async def votes(self, args: list[str]) -> None:
        no_arguments(args, "/votes")
        self.say("\n".join(replies.tally(await self.core.votes(self.ctx))))

    async def post(self, args: list[str]) -> None:
        named, to = post_options(args)
        chosen = await candidate_id(self.core, self.ctx, named) if named else None
        self.say(replies.posted(await self.core.post(self.ctx, chosen, to=to)))

    async def history(self, args: list[str]) -> None:
        self.say("\n".join(replies.history(await self.core.history(self.ctx, history_size(args)))))

    async def status(self, args: list[str]) -> None:
        no_arguments(args, "/status")
        self.say(replies.status(await self.core.status()))

    async def schedule(self, args: list[str]) -> None:
        action = args[0].lower() if args else ""
        if action == "daily":
            self.say(replies.schedule(await self.core.set_schedule(self.ctx, **schedule_options(args[1:]))))
        elif action == "show":
            no_arguments(args[1:], "/schedule show")
            self.say(replies.schedule(await self.core.schedule(self.ctx)))
        elif action == "off":
            no_arguments(args[1:], "/schedule off")
            self.say("Schedule off." if await self.core.schedule_off(self.ctx) else "There was no schedule on here.")
        else:
            raise BadRequest(SCHEDULE_USAGE)

    # --- what the scheduler calls (chatbot.scheduler.Frontend) -------------------------------------------------

    def healthy(self) -> bool:
        return True

    def quote(self, text: str) -> str:
        return text

    async def announce(self, ctx: Context, text: str) -> None:
        if ctx.channel_id == self.ctx.channel_id:
            self.say(text)

    async def present(self, ctx: Context, result: AskResult, note: str) -> None:
        if ctx.channel_id == self.ctx.channel_id:
            self.show(result, note)

    async def help(self, args: list[str]) -> None:
        self.say(HELP)

    async def quit(self, args: list[str]) -> None:
        raise Quit

    async def candidate(self, args: list[str]) -> tuple[str, int]:
        """(label, storage id) of the candidate an argument names: N in the latest batch, or #ID."""
        if not args:
            raise BadRequest("Which candidate? Give its number in the latest batch, e.g. /vote 1.")
        if len(args) > 1:
            raise BadRequest("Give one candidate: its number in the latest batch, or #ID.")
        return args[0], await candidate_id(self.core, self.ctx, args[0])
