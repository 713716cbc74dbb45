"""The terminal front end: the chat commands, typed on stdin, answered on stdout.

    /proverb prefix:"thou shalt" temperature:0.9 count:3 length:60
    /vote 1        /unvote 1        /votes        /post [N] [to:x]        /history [n]
    /unpost #ID        /status        /help        /quit
    /schedule daily time:09:30 timezone:Europe/Paris window:10        /schedule show        /schedule off
    /model list        /model use NAME        /model reload [NAME]        /proverb run:NAME
    /veto N        /blocklist add WORD        /blocklist remove WORD        /blocklist show

Each console session is a channel of its own, `terminal-<6 hex digits>` (the first line names it), so two consoles
on one log never act on each other's batches: N is a candidate's number in this session's latest batch, and #ID
takes only a candidate shown in this session.

The console's daily schedule is one for all sessions on the log (channel `terminal`): set in one session, it is
shown, replaced or turned off from any later one, and it keeps running across restarts (a missed run runs once at
the next start). A scheduled batch is sampled in the session of the bot that runs it, so /vote N and /post work on
it there as on a batch of your own.

Works with a pipe as well as a terminal (`printf '/proverb\\n/post\\n' | proverbot run`); EOF ends like /quit. Bad
input prints one line starting with "Sorry:" and the console goes on. The console's one user is the operator: a
moderator, exempt from the limits per member (user_cooldown, user_hourly_candidates).
"""

from __future__ import annotations

import asyncio
import getpass
import secrets
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TextIO

from chatbot.context import Context
from chatbot.core import Core
from chatbot.frontends import flows
from chatbot.frontends.common import words

SCHEDULES = "terminal"          # the channel of the console's schedule, shared by every session
HELP = """Commands:
  /proverb [prefix:"text"] [temperature:0.1-2.0] [count:1-10] [length:1-200] [run:NAME]   sample candidates
  /vote N, /unvote N      vote for (or withdraw from) candidate N of the latest batch (#ID: one shown here)
  /votes                  the tally of the latest batch
  /post [N] [to:NAME]     publish the top-voted candidate (ties: the earlier one), or candidate N (on NAME)
  /history [n]            the n most recent posts
  /unpost #ID             delete post #ID on its platform and mark it withdrawn in the log
  /status                 model, queue, posts in the last 24 hours and the schedule
  /schedule daily time:HH:MM [timezone:Europe/Paris] [window:10] [to:NAME]   post the top-voted of a daily batch
  /schedule show, /schedule off
  /model list             the trained runs (step, base, date); this session's and the loaded ones marked
  /model use NAME         sample from run NAME in this session from now on
  /model reload [NAME]    load the run's newest checkpoint now (it is also picked up at the next request)
  /veto N                 candidate N (or #ID) is never posted and its votes stop counting; a veto is final
  /blocklist add WORD, /blocklist remove WORD, /blocklist show   words (or phrases) that drop candidates, at once
  /help, /quit"""


@dataclass(frozen=True)
class Terminal:
    """The terminal as a chat channel and as the answer to a command (flows.Channel and flows.Reply)."""

    ctx: Context
    out: TextIO
    hint = "Vote with /vote N."
    marks = ()

    def quote(self, text: str) -> str:
        return text

    def pages(self, lines: Iterable[str]) -> list[str]:
        return ["\n".join(lines)]

    async def send(self, text: str) -> None:
        self.say(text)

    async def mark(self, message_id: str, mark: str) -> None:
        """Never called: nothing is marked in a terminal."""

    async def accept(self, slow: bool = False, text: str = "", posting: bool = False) -> None:
        if text:
            self.say(text)

    async def answer(self, lines: list[str], private: bool = True) -> None:
        self.say("\n".join(lines))

    async def may_post(self) -> bool:
        """The console's one user is the operator."""
        return True

    def say(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)


class Quit(Exception):
    pass


class Console:
    platform = "console"

    def __init__(self, core: Core, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 user: str | None = None) -> None:
        self.core = core
        self.stdin = stdin
        user = user or getpass.getuser()
        session = Context(self.platform, channel_id=f"terminal-{secrets.token_hex(3)}", user_id=user, user_name=user)
        self.terminal = Terminal(session, stdout)
        self.schedules = Terminal(replace(session, channel_id=SCHEDULES), stdout)

    async def run(self) -> None:
        """Read and answer commands until /quit or end of input."""
        model = self.core.model
        self.terminal.say(f"proverbot console: {model.run_name} on {model.device}, publishing to "
                          f"{self.core.publisher.name}; this session is {self.terminal.ctx.channel_id}. /help lists "
                          "the commands.")
        lines = self.read_lines()
        while True:
            if self.stdin.isatty():
                self.terminal.say("> ", end="")
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
        name = "a line"
        try:
            typed = words(line.rstrip("\r\n"))
            if not typed:
                return
            name, args = typed[0].lower(), typed[1:]
            if name in ("/quit", "/exit"):
                raise Quit
            if name == "/help":
                self.terminal.say(HELP)
                return
            # the schedule is the console's, not the session's: /schedule and /status act on it
            here = self.schedules if name in ("/schedule", "/status") else self.terminal
            await flows.command(self.core, here, here, name, args)
        except Quit:
            raise
        except Exception as err:  # noqa: BLE001 (flows.failed logs what no one can act on)
            await flows.failed(self.terminal, err, name)

    # --- what the scheduler calls (chatbot.scheduler.Frontend) -------------------------------------------------

    def healthy(self) -> bool:
        return True

    def channel(self, ctx: Context) -> Terminal:
        """A scheduled run of the console's schedule: sampled, shown and voted on in this session."""
        return Terminal(replace(ctx, channel_id=self.terminal.ctx.channel_id), self.terminal.out)
