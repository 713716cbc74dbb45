"""What the bot says, in words shared by every front end (console, Discord, Slack) and the scheduler.

Each function turns one of the core's results into plain text. Generated and user-given text goes through
`quote`, the front end's escaper (Discord neutralises markdown and mentions, Slack its mrkdwn), so no text from
the model or a user is ever shown unescaped; the console passes nothing and shows it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from chatbot.core import AskResult, RunList, ShownCandidate, Status
from chatbot.posting import Posted
from model.pool import LoadedRun
from proverbot_errors import ProverbotError
from storage import AlreadyPosted, BlockedWordInfo, CandidateInfo, PostInfo, ScheduleInfo, TallyRow

Quote = Callable[[str], str]


def plain(text: str) -> str:
    return text


def candidate(c: ShownCandidate, quote: Quote = plain) -> str:
    return f"{c.number}. [#{c.id}] {quote(c.text)}"


def queued(position: int) -> str:
    return f"Waiting for the model: #{position} in the queue."


def header(user: str | None, prefix: str, result: AskResult, how_to_vote: str, quote: Quote = plain) -> str:
    """The line above a batch asked for in a command: who asked, for what, and the `asked` summary."""
    who = quote(user or "someone")
    asked_for = f"{who} asked for “{quote(prefix)}”" if prefix else f"{who} asked"
    return f"{asked_for}: {asked(result, how_to_vote)}"


def asked(result: AskResult, how_to_vote: str) -> str:
    """The line after a batch: how many, from how many samples, what was filtered out and why."""
    shown = len(result.candidates)
    short = f" (only {shown} of {result.wanted} wanted)" if shown < result.wanted else ""
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in result.filtered.items())
    filtered = f"; filtered out {result.filtered_out}: {reasons}" if result.filtered_out else ""
    candidates = f"{shown} candidate{'' if shown == 1 else 's'}"
    return (f"[{candidates}{short} from {result.samples} samples in {result.seconds:.1f}s{filtered}; "
            f"generation #{result.generation_id}. {how_to_vote}]")


def tally(rows: Iterable[TallyRow], quote: Quote = plain) -> list[str]:
    lines = []
    for number, row in enumerate(rows, 1):
        plural = "" if row.votes == 1 else "s"
        votes = "vetoed" if row.vetoed else f"{row.votes} vote{plural}"
        lines.append(f"{number}. [#{row.candidate_id}] {votes}: {quote(row.text)}")
    return lines or ["No candidates in the latest batch."]


def voted(named: str, candidate_id: int, added: bool, changed: bool) -> str:
    """The answer to /vote (added) or /unvote of candidate `named` (as typed: N or #ID)."""
    if added:
        return f"Voted for {named} [#{candidate_id}]."
    return f"Removed your vote for {named} [#{candidate_id}]." if changed else \
        f"You had no vote on {named} [#{candidate_id}]."


def posted(p: Posted, quote: Quote = plain) -> str:
    return f"Posted [#{p.candidate_id}] on {p.platform}: {p.url}\n  {quote(p.text)}"


def unposted(p: PostInfo, quote: Quote = plain) -> str:
    return f"Withdrew post #{p.id} from {p.platform}: {p.url or p.remote_id} is deleted.\n  {quote(p.text)}"


def history(posts: Iterable[PostInfo], quote: Quote = plain) -> list[str]:
    lines = []
    for post in posts:
        when = f"{post.posted_at or post.updated_at:%Y-%m-%d %H:%M} UTC"
        lines.append(f"post #{post.id} {post.status} on {post.platform} {when}: {post.url or '-'}"
                     f"{withdrawn(post, quote)}\n  {quote(post.text)}")
    return lines or ["Nothing posted yet."]


def withdrawn(post: PostInfo, quote: Quote = plain) -> str:
    """' (withdrawn 2026-11-27 16:02 UTC by ada)' for a deleted post, else ''."""
    if post.deleted_at is None:
        return ""
    who = post.deleted_by_name or post.deleted_by_id
    return f" (withdrawn {post.deleted_at:%Y-%m-%d %H:%M} UTC" + (f" by {quote(who)})" if who else ")")


def status(s: Status) -> str:
    """The model, the queue, and per publisher (the default first) its posts in the last 24 hours against its quota."""
    model = s.model
    posts = ", ".join(f"{p.title} {p.posts_last_24h}" + (f" of {p.quota}" if p.quota else "") for p in s.publishers)
    note = f" {s.note}" if s.note else ""
    where = f"on {model.device}" if model.backend == "in-process" else f"served by {model.backend}"
    return (f"Model: {model.run_name} (checkpoint {model.checkpoint_id or 'unknown'}) {where}; queue: "
            f"{s.queue_length} waiting; posts in the last 24 h: {posts}.{loaded_runs(s.loaded)}{note}"
            + (f" It learned from {s.learned_from} preference pairs of the votes." if s.learned_from else ""))


def loaded_runs(loaded: Iterable[LoadedRun]) -> str:
    """' Loaded: mybot (checkpoint 2320050d41be, 475 MB), ...' (most recently used first), or '' for none."""
    runs = ", ".join(f"{r.name} (checkpoint {r.checkpoint_id or 'unknown'}, {r.size / 2**20:,.0f} MB)" for r in loaded)
    return f" Loaded: {runs}." if runs else ""


def runs(listed: RunList, quote: Quote = plain) -> list[str]:
    """/model list: one line per run (step, base, date), this channel's and the loaded ones marked."""
    loaded = {r.name for r in listed.loaded}
    lines = [f"Runs ({listed.here} answers here; * loaded):"]
    for run in listed.runs:
        marks = (" ← here" if run.name == listed.here else "") + (" (default)" if run.name == listed.default else "")
        step = "?" if run.step is None else run.step
        lines.append(f"{'*' if run.name in loaded else ' '} {quote(run.name)}: step {step}, base "
                     f"{quote(run.base or '?')}, saved {run.saved_at:%Y-%m-%d %H:%M} UTC{marks}")
    return lines if listed.runs else ["No trained runs yet: train one with `proverbot train`."]


def run_used(name: str, quote: Quote = plain) -> str:
    return f"This channel samples from run {quote(name)} from now on (/model use NAME changes it)."


def reloaded(name: str, old: str, new: str, quote: Quote = plain) -> str:
    if old == new:
        return f"Reloaded run {quote(name)}: checkpoint {new or 'unknown'} (unchanged)."
    return f"Reloaded run {quote(name)}: checkpoint {new or 'unknown'} (was {old or 'not loaded'})."


def vetoed(named: str, c: CandidateInfo, by: str | None, quote: Quote = plain) -> str:
    """The answer to /veto, in the channel: what was vetoed, by whom, and that it is final."""
    return (f"Vetoed {quote(named)} [#{c.id}] by {quote(by or 'a moderator')}: it will never be posted, and its votes "
            f"no longer count.\n  {quote(c.text)}")


def blocked(word: str, added: bool, quote: Quote = plain) -> str:
    if not added:
        return f"“{quote(word)}” is already on the blocklist."
    return f"Blocked “{quote(word)}”: candidates holding it (any case or accents) are dropped from now on."


def unblocked(word: str, removed: str | None, quote: Quote = plain) -> str:
    if removed is None:
        return f"“{quote(word)}” is not on the blocklist (/blocklist show lists it; the config file's blocked_words " \
               "are changed there)."
    return f"Took “{quote(removed)}” off the blocklist."


def blocklist(words: Iterable[BlockedWordInfo], quote: Quote = plain) -> list[str]:
    lines = [f"“{quote(w.word)}” (by {quote(w.added_by_name or w.added_by_id or 'someone')}, {w.added_at:%Y-%m-%d})"
             for w in words]
    if not lines:
        return ["The blocklist is empty (the config file's blocked_words apply as ever)."]
    return [f"Blocked words ({len(lines)}; the config file's blocked_words apply too):", *lines]


def schedule(s: ScheduleInfo | None) -> str:
    if s is None:
        return "No schedule here."
    if not s.enabled:
        return f"Schedule off (was daily at {s.time_of_day} {s.timezone})."
    where = f", posting on {s.publisher}" if s.publisher else ""
    return (f"Daily at {s.time_of_day} {s.timezone}, voting open {s.window_minutes} min{where}; "
            f"next run {s.next_run_at:%Y-%m-%d %H:%M} UTC.")


def schedule_off(done: bool) -> str:
    return "Schedule off." if done else "There was no schedule on here."


def error(err: BaseException) -> str:
    """Why something failed, for the person who asked: the error's own words when they can act on it (a
    ProverbotError), else only its type: the details of a bug may hold anything, and go to the bot's log."""
    if isinstance(err, AlreadyPosted):
        return f"already posted: {err.url or 'no link recorded'} (post #{err.post_id})"
    if isinstance(err, ProverbotError):
        return str(err)
    return f"unexpected {type(err).__name__} (the bot's log has the details)."


def sorry(err: BaseException) -> str:
    """A failed command's answer, on every front end."""
    return f"Sorry: {error(err)}"
