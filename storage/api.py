"""The log's public API: one `Database` object that the bot, the CLI and the scheduler share.

    from storage import Database

    db = Database(settings.database_url, heartbeat_s=settings.heartbeat_s)  # any SQLAlchemy async URL
    unknown = await db.start()                  # checks, migrates, marks stale pending posts unknown (count)
    await db.register_process()                 # a bot: beats in the background; what it begins is its own
    gid = await db.record_generation("discord", channel_id="c1", user_id="u1", user_name="ada", prefix="",
                                     temperature=0.7, count=5)
    gen = await db.finish_generation(gid, batch.usable + batch.rejected, duration=1.2, samples=7, tokens=300,
                                     run_name="default", checkpoint_id="2320050d41be", device="cpu")
    await db.set_candidate_message(gen.candidates[0].id, "msg-1")
    await db.record_vote(gen.candidates[0].id, "u2", "👍", user_name="bob")
    best = winner(await db.tally(gid))
    post = await db.begin_post("x", candidate_id=best.candidate_id, requested_by_id="u1")   # before publishing
    await db.settle_post(post.id, "posted", remote_id="123", url="https://x.com/bot/status/123")
    await db.close()

Each method is documented in the module that holds it:
    storage/db.py           start, register_process, beat, close, check, backup    (DatabaseCore; the "stale" rule
                            that lets several bot processes share one log)
    storage/generations.py  record_generation, finish_generation, fail_generation, fail_stale_generations,
                            get_generation, latest_generation, set_candidate_message, candidate_by_message
    storage/votes.py        record_vote, remove_vote, clear_votes, votes_for, tally (+ winner)
    storage/posts.py        begin_post, settle_post, settle_post_by_hand, get_post, posts_since,
                            mark_stale_posts_unknown (+ normalise_text)
    storage/schedules.py    set_schedule, get_schedule, list_schedules, disable_schedule, claim_due_schedules
                            (+ next_run_after)
    storage/channels.py     set_channel_run, get_channel_run (each channel's run: /model use)
    storage/moderation.py   veto, block_word, unblock_word, blocked_words, requests_since
    storage/history.py      record_audit, history
    storage/preferences.py  preference_pairs (what the votes prefer, for `proverbot train --from-votes`)
Records returned are the frozen dataclasses of storage/records.py; errors are storage/errors.py (ProverbotError).
Every id is checked before a query (DatabaseCore._id): one that no row can have (not a positive int, or too big for
the backend's INTEGER) is the same NotFound as a missing one. A candidate the filter rejected can be neither voted
for nor posted (Unusable), whichever front end names it.
"""

from storage.channels import ChannelsAPI
from storage.generations import GenerationsAPI
from storage.history import HistoryAPI
from storage.moderation import ModerationAPI
from storage.posts import PostsAPI
from storage.preferences import PreferencesAPI
from storage.schedules import SchedulesAPI
from storage.votes import VotesAPI


class Database(GenerationsAPI, VotesAPI, PostsAPI, SchedulesAPI, ChannelsAPI, ModerationAPI, HistoryAPI,
               PreferencesAPI):
    """The log. Every method opens, commits and closes its own short transaction."""
