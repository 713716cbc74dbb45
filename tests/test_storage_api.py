"""The log's API on a real SQLite file, and on PostgreSQL when PROVERBOT_TEST_POSTGRES_URL names a server.

Every test gets a fresh database: a new SQLite file in its tmp dir, or (PostgreSQL) every table dropped first.
"""

import asyncio
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace

import pytest
import pytest_asyncio

from storage import (
    AlreadyPosted,
    Database,
    NewCandidate,
    NewerSchema,
    NotFound,
    PostFinal,
    PostInProgress,
    ScheduleError,
    StorageError,
    Unusable,
    next_run_after,
    winner,
)
from storage.engine import make_engine, parse_url
from storage.models import Base

PG_URL = os.environ.get("PROVERBOT_TEST_POSTGRES_URL")
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


async def fresh_url(backend: str, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    if not PG_URL:
        pytest.skip("PROVERBOT_TEST_POSTGRES_URL not set: the PostgreSQL run of the storage tests needs a server, "
                    "e.g. PROVERBOT_TEST_POSTGRES_URL=postgresql+asyncpg://user@127.0.0.1:5433/proverbot_test")
    engine = make_engine(parse_url(PG_URL))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    await engine.dispose()
    return PG_URL


@pytest_asyncio.fixture(params=["sqlite", "postgres"], loop_scope="function")
async def url(request, tmp_path) -> str:
    return await fresh_url(request.param, tmp_path)


@pytest_asyncio.fixture(loop_scope="function")
async def db(url):
    database = Database(url)
    assert await database.start() == 0
    yield database
    await database.close()


async def generation(db, texts=("first", "second", "third"), channel="c1", platform="discord", **kwargs) -> object:
    gid = await db.record_generation(platform, channel_id=channel, user_id="u1", user_name="Ada", count=len(texts),
                                     **kwargs)
    return await db.finish_generation(gid, [NewCandidate(t, tokens=2) for t in texts], duration=0.5, samples=3,
                                      tokens=6)


async def test_a_database_from_a_newer_proverbot_is_refused_on_every_backend(url):
    db = Database(url)
    await db.start()
    await db.record_generation("discord", channel_id="c1")
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099_future'")
    await db.close()
    newer = Database(url)
    with pytest.raises(NewerSchema, match="made by a newer proverbot.*0099_future"):
        await newer.start()
    engine = make_engine(parse_url(url))
    async with engine.connect() as connection:
        assert (await connection.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar() == "0099_future"
        assert (await connection.exec_driver_sql("SELECT count(*) FROM generations")).scalar() == 1
    await engine.dispose()


# -- generations and candidates -------------------------------------------------------------------

async def test_a_generation_records_the_request_then_its_outcome_and_candidates(db):
    gid = await db.record_generation("discord", server_id="g1", channel_id="c1", user_id="u1", user_name="Ada",
                                     prefix="thou shalt", temperature=0.9, top_k=40, top_p=0.95, length=80, count=3,
                                     seed=2**40, at=T0)
    pending = await db.get_generation(gid)
    assert (pending.status, pending.candidates, pending.finished_at) == ("pending", (), None)
    assert (pending.prefix, pending.temperature, pending.top_k, pending.top_p, pending.seed) == (
        "thou shalt", 0.9, 40, 0.95, 2**40)
    assert pending.created_at == T0 and pending.created_at.tzinfo is not None

    verdict = SimpleNamespace(usable=False, reason="too_long", detail="tweet length 301 > 280")
    from_sampler = SimpleNamespace(text="thou shalt be long", tokens=7, verdict=verdict)  # model.candidates.Candidate
    done = await db.finish_generation(gid, [NewCandidate("thou shalt 🦉", tokens=4), from_sampler, "plain text"],
                                      duration=1.5, samples=9, tokens=120, run_name="default",
                                      checkpoint_id="2320050d41be", device="cuda:0", at=T0 + timedelta(seconds=2))
    assert (done.status, done.duration_s, done.samples, done.tokens) == ("ok", 1.5, 9, 120)
    assert (done.run_name, done.checkpoint_id, done.device) == ("default", "2320050d41be", "cuda:0")
    assert done.finished_at == T0 + timedelta(seconds=2)
    assert [(c.position, c.text, c.tokens, c.chars, c.usable, c.reason, c.detail) for c in done.candidates] == [
        (0, "thou shalt 🦉", 4, 12, True, None, ""),
        (1, "thou shalt be long", 7, 18, False, "too_long", "tweet length 301 > 280"),
        (2, "plain text", 0, 10, True, None, ""),
    ]
    assert await db.get_generation(gid) == done


async def test_finish_generation_writes_all_candidates_or_none(db):
    gid = await db.record_generation("discord", channel_id="c1")
    broken = [NewCandidate("fine"), NewCandidate("also fine"), NewCandidate(None)]  # fails mid-batch
    with pytest.raises(TypeError):
        await db.finish_generation(gid, broken)
    still = await db.get_generation(gid)
    assert (still.status, still.candidates) == ("pending", ())
    done = await db.finish_generation(gid, [NewCandidate("fine")])
    assert [c.text for c in done.candidates] == ["fine"]


async def test_a_generation_is_finished_once_and_unknown_ids_are_not_found(db):
    done = await generation(db)
    with pytest.raises(StorageError, match="already ok"):
        await db.finish_generation(done.id, [NewCandidate("again")])
    with pytest.raises(StorageError, match="already ok"):
        await db.fail_generation(done.id, "boom")
    assert len((await db.get_generation(done.id)).candidates) == 3
    with pytest.raises(NotFound, match="no generation #999"):
        await db.finish_generation(999, [])
    with pytest.raises(NotFound):
        await db.get_generation(999)


async def test_failed_generation_keeps_its_error_and_latest_skips_unfinished_ones(db):
    first = await generation(db, texts=("old",))
    failed = await db.record_generation("discord", channel_id="c1")
    await db.fail_generation(failed, "CUDA out of memory", duration=0.2)
    pending = await db.record_generation("discord", channel_id="c1")
    got = await db.get_generation(failed)
    assert (got.status, got.error, got.duration_s) == ("failed", "CUDA out of memory", 0.2)
    latest = await db.latest_generation("discord", "c1")
    assert latest.id == first.id and [c.text for c in latest.candidates] == ["old"]
    assert (await db.latest_generation("discord", "c1", include_unfinished=True)).id == pending
    assert await db.latest_generation("discord", "other") is None
    assert await db.latest_generation("slack", "c1") is None


async def test_candidate_message_ids_are_found_per_platform(db):
    gen = await generation(db)
    await db.set_candidate_message(gen.candidates[1].id, "m-42")
    found = await db.candidate_by_message("discord", "m-42")
    assert (found.id, found.text, found.message_id) == (gen.candidates[1].id, "second", "m-42")
    assert await db.candidate_by_message("slack", "m-42") is None
    assert await db.candidate_by_message("discord", "m-43") is None
    with pytest.raises(NotFound, match="candidate #999"):
        await db.set_candidate_message(999, "m-1")


async def test_naive_datetimes_are_refused(db):
    with pytest.raises(ValueError, match="naive"):
        await db.record_generation("discord", at=datetime(2024, 1, 1))


# -- votes --------------------------------------------------------------------------------------

@pytest.fixture(params=["upsert", "portable"])
def vote_path(request, monkeypatch) -> str:
    """record_vote's one-statement upsert (SQLite, PostgreSQL) and its portable fallback (other databases)."""
    if request.param == "portable":
        monkeypatch.setattr("storage.votes.UPSERT", {})
    return request.param


async def test_a_vote_counts_once_is_removed_not_deleted_and_revives(db, vote_path):
    gen = await generation(db)
    cid = gen.candidates[0].id
    vote = await db.record_vote(cid, "u2", "👍", user_name="Bob", at=T0)
    again = await db.record_vote(cid, "u2", "👍", user_name="Bob", at=T0 + timedelta(minutes=1))
    assert again == vote and vote.active
    assert [row.votes for row in await db.tally(gen.id)] == [1, 0, 0]

    assert await db.remove_vote(cid, "u2", "👍", at=T0 + timedelta(minutes=2)) is True
    assert await db.remove_vote(cid, "u2", "👍") is False
    assert await db.votes_for(cid) == []
    [kept] = await db.votes_for(cid, include_removed=True)
    assert (kept.id, kept.removed_at) == (vote.id, T0 + timedelta(minutes=2))
    assert [row.votes for row in await db.tally(gen.id)] == [0, 0, 0]

    revived = await db.record_vote(cid, "u2", "👍", user_name="Bobby", at=T0 + timedelta(minutes=3))
    assert (revived.id, revived.removed_at, revived.voted_at, revived.user_name) == (
        vote.id, None, T0 + timedelta(minutes=3), "Bobby")
    assert [row.votes for row in await db.tally(gen.id)] == [1, 0, 0]


async def test_each_emoji_is_its_own_vote_and_voters_count_people(db):
    gen = await generation(db)
    cid = gen.candidates[0].id
    await db.record_vote(cid, "u2", "👍")
    await db.record_vote(cid, "u2", "❤️")
    await db.record_vote(cid, "u3", "👍")
    row = (await db.tally(gen.id))[0]
    assert (row.votes, row.voters) == (3, 2)
    assert (await db.tally(gen.id, emoji="❤️"))[0].votes == 1


async def test_clearing_a_messages_reactions_removes_all_its_votes(db):
    gen = await generation(db)
    first, second = gen.candidates[0], gen.candidates[1]
    await db.set_candidate_message(first.id, "m-1")
    await db.set_candidate_message(second.id, "m-2")
    for user in ("u1", "u2", "u3"):
        await db.record_vote(first.id, user, "👍")
    await db.record_vote(second.id, "u1", "👍")
    assert await db.clear_votes("slack", "m-1") == 0
    assert await db.clear_votes("discord", "m-1") == 3
    assert await db.clear_votes("discord", "m-1") == 0
    assert [row.votes for row in await db.tally(gen.id)] == [0, 1, 0]
    assert len(await db.votes_for(first.id, include_removed=True)) == 3


async def test_winner_has_most_votes_and_ties_go_to_the_earlier_candidate(db):
    gen = await generation(db, texts=("a", "b", "c"))
    a, b, c = (cand.id for cand in gen.candidates)
    assert winner(await db.tally(gen.id)) is None
    await db.record_vote(c, "u1", "👍")
    await db.record_vote(b, "u2", "👍")
    assert winner(await db.tally(gen.id)).candidate_id == b  # tie 1-1: b comes first
    await db.record_vote(c, "u3", "👍")
    assert winner(await db.tally(gen.id)).candidate_id == c
    await db.remove_vote(c, "u3", "👍")
    await db.remove_vote(c, "u1", "👍")
    assert winner(await db.tally(gen.id)).candidate_id == b
    assert a not in {row.candidate_id for row in await db.tally(gen.id) if row.votes}


async def test_unusable_candidates_take_no_votes_and_never_win(db, vote_path):
    gid = await db.record_generation("discord", channel_id="c1")
    gen = await db.finish_generation(gid, [NewCandidate("blocked", usable=False, reason="blocked_word"),
                                           NewCandidate("fine")])
    blocked = gen.candidates[0].id
    with pytest.raises(Unusable, match=f"Candidate #{blocked} was filtered out \\(blocked word\\) and cannot be "
                                       "voted for"):
        await db.record_vote(blocked, "u1", "👍")
    assert await db.votes_for(blocked, include_removed=True) == []
    await db.record_vote(gen.candidates[1].id, "u1", "👍")
    rows = await db.tally(gid)
    assert winner(rows).text == "fine"
    logged_before = replace(rows[0], votes=5, voters=5)  # votes an older proverbot let through still never win
    assert winner([logged_before, rows[1]]).text == "fine"


async def test_votes_and_tallies_of_unknown_ids_are_not_found(db, vote_path):
    with pytest.raises(NotFound, match="candidate #999"):
        await db.record_vote(999, "u1", "👍")
    with pytest.raises(NotFound, match="generation #999"):
        await db.tally(999)


# -- posts --------------------------------------------------------------------------------------

async def test_a_posted_candidate_or_the_same_text_is_never_posted_twice(db):
    gen = await generation(db, texts=("Thou shalt  not   covet",))
    cid = gen.candidates[0].id
    post = await db.begin_post("x", candidate_id=cid, requested_by_id="u1", requested_by_name="Ada")
    assert (post.status, post.attempts, post.text, post.candidate_id) == ("pending", 1, "Thou shalt  not   covet", cid)
    url = "https://x.com/proverbot/status/1"
    settled = await db.settle_post(post.id, "posted", remote_id="1", url=url)
    assert (settled.status, settled.url, settled.remote_id) == ("posted", url, "1") and settled.posted_at
    with pytest.raises(AlreadyPosted) as err:
        await db.begin_post("x", candidate_id=cid)
    assert (err.value.url, err.value.post_id) == (url, post.id) and url in str(err.value)
    with pytest.raises(AlreadyPosted):
        await db.begin_post("x", text="thou SHALT not covet\n")  # same text, normalised
    other = await db.begin_post("mastodon", candidate_id=cid)  # another platform is another post
    assert other.id != post.id


async def test_a_pending_post_blocks_a_second_and_a_failed_one_begins_again(db):
    post = await db.begin_post("x", text="free text")
    with pytest.raises(PostInProgress) as err:
        await db.begin_post("x", text="Free  text")
    assert (err.value.status, err.value.post_id) == ("pending", post.id)
    failed = await db.settle_post(post.id, "failed", error="HTTP 503")
    assert (failed.status, failed.last_error) == ("failed", "HTTP 503")
    retry = await db.begin_post("x", text="free text", requested_by_name="Bob")
    assert (retry.id, retry.status, retry.attempts, retry.requested_by_name) == (post.id, "pending", 2, "Bob")


async def test_pending_posts_become_unknown_at_the_next_start_and_need_a_human(url):
    first = Database(url)
    await first.start()
    post = await first.begin_post("x", text="interrupted")
    await first.close()  # as if the process died while the publisher ran

    second = Database(url)
    assert await second.start() == 1
    try:
        got = await second.get_post(post.id)
        assert got.status == "unknown" and "stopped" in got.last_error
        with pytest.raises(PostInProgress) as err:
            await second.begin_post("x", text="interrupted")
        assert err.value.status == "unknown"
        assert "unknown outcome" in str(err.value) and f"settle-post {post.id}" in str(err.value)
        assert (await second.settle_post(post.id, "posted", url="https://x/1")).status == "posted"
    finally:
        await second.close()
    third = Database(url)
    assert await third.start() == 0
    await third.close()


async def test_settle_post_rules(db):
    post = await db.begin_post("x", text="t")
    with pytest.raises(ValueError):
        await db.settle_post(post.id, "pending")
    await db.settle_post(post.id, "posted", url="https://x/1")
    for status in ("failed", "posted"):  # posted is final: not undone, its link not replaced
        with pytest.raises(PostFinal, match=f"Post #{post.id} on x is already posted \\(https://x/1\\)"):
            await db.settle_post(post.id, status, url="https://evil.example/2")
    assert (await db.get_post(post.id)).url == "https://x/1"
    with pytest.raises(NotFound):
        await db.settle_post(999, "posted")
    with pytest.raises(ValueError):
        await db.begin_post("x")
    with pytest.raises(ValueError):
        await db.begin_post("x", candidate_id=1, text="both")
    with pytest.raises(NotFound, match="candidate #999"):
        await db.begin_post("x", candidate_id=999)
    with pytest.raises(StorageError, match="nothing to post"):
        await db.begin_post("x", text="  ")


async def test_posts_since_counts_what_went_out_or_may_have(db):
    old = await db.begin_post("x", text="old", at=T0 - timedelta(days=2))
    await db.settle_post(old.id, "posted", at=T0 - timedelta(days=2))
    recent = await db.begin_post("x", text="recent", at=T0)
    await db.settle_post(recent.id, "posted", at=T0 + timedelta(minutes=1))
    failed = await db.begin_post("x", text="failed", at=T0)
    await db.settle_post(failed.id, "failed", at=T0)
    pending = await db.begin_post("x", text="pending", at=T0 + timedelta(hours=1))
    await db.begin_post("mastodon", text="elsewhere", at=T0)
    since = await db.posts_since("x", T0 - timedelta(hours=1))
    assert [p.id for p in since] == [recent.id, pending.id]


# -- schedules ----------------------------------------------------------------------------------

def test_next_run_follows_the_time_zone_across_dst():
    paris = "Europe/Paris"
    utc = partial(datetime, tzinfo=UTC)
    assert next_run_after("09:30", paris, utc(2024, 3, 29, 12, 0)) == utc(2024, 3, 30, 8, 30)
    # 31 March 2024: Paris moves from UTC+1 to UTC+2
    assert next_run_after("09:30", paris, utc(2024, 3, 30, 9, 0)) == utc(2024, 3, 31, 7, 30)
    assert next_run_after("09:30", paris, utc(2024, 3, 31, 7, 29)) == utc(2024, 3, 31, 7, 30)
    assert next_run_after("09:30", paris, utc(2024, 3, 31, 7, 30)) == utc(2024, 4, 1, 7, 30)
    assert next_run_after("23:59", "UTC", utc(2024, 12, 31, 23, 59, 30)) == utc(2025, 1, 1, 23, 59)


async def test_set_schedule_validates_and_replaces_the_channels_schedule(db):
    for bad in ("9:30", "24:00", "noon", "12:60"):
        with pytest.raises(ScheduleError, match="HH:MM"):
            await db.set_schedule("discord", "c1", time_of_day=bad)
    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        await db.set_schedule("discord", "c1", time_of_day="09:00", timezone="Mars/Olympus")
    with pytest.raises(ScheduleError, match="window"):
        await db.set_schedule("discord", "c1", time_of_day="09:00", window_minutes=0)
    assert await db.list_schedules() == []

    first = await db.set_schedule("discord", "c1", server_id="g1", time_of_day="09:30", timezone="Europe/Paris",
                                  set_by_id="u1", set_by_name="Ada", at=T0)
    assert first.next_run_at == datetime(2024, 3, 2, 8, 30, tzinfo=UTC)  # 09:30 in Paris had passed at T0
    second = await db.set_schedule("discord", "c1", server_id="g1", time_of_day="18:00", timezone="UTC",
                                   window_minutes=30, set_by_name="Bob", at=T0)
    assert second.id == first.id
    assert (second.time_of_day, second.window_minutes, second.set_by_name) == ("18:00", 30, "Bob")
    assert await db.get_schedule("discord", "c1", server_id="g1") == second
    assert await db.get_schedule("discord", "c1") is None  # another server
    assert len(await db.list_schedules()) == 1
    audit = await db.history("audit")
    assert [(a.action, a.actor_name, a.target) for a in audit] == [
        ("schedule.set", "Bob", "discord/g1/c1"), ("schedule.set", "Ada", "discord/g1/c1")]


async def test_due_schedules_are_claimed_once_and_a_long_outage_runs_once(db):
    await db.set_schedule("discord", "c1", time_of_day="09:30", timezone="Europe/Paris", at=T0)  # 2 March 08:30 UTC
    await db.set_schedule("discord", "c2", time_of_day="12:00", timezone="UTC", at=T0)  # 1 March 12:00 UTC
    assert await db.claim_due_schedules(T0) == []
    back = T0 + timedelta(days=3, hours=2)  # 4 March 11:00 UTC: the bot was down for days
    runs = await db.claim_due_schedules(back)
    assert sorted((r.schedule.channel_id, r.due_at) for r in runs) == [
        ("c1", datetime(2024, 3, 2, 8, 30, tzinfo=UTC)), ("c2", datetime(2024, 3, 1, 12, 0, tzinfo=UTC))]
    assert {r.schedule.channel_id: r.schedule.next_run_at for r in runs} == {
        "c1": datetime(2024, 3, 5, 8, 30, tzinfo=UTC), "c2": datetime(2024, 3, 4, 12, 0, tzinfo=UTC)}
    assert await db.claim_due_schedules(back) == []
    stored = await db.get_schedule("discord", "c1")
    assert (stored.last_run_at, stored.next_run_at) == (back, datetime(2024, 3, 5, 8, 30, tzinfo=UTC))
    [next_day] = await db.claim_due_schedules(datetime(2024, 3, 4, 12, 0, tzinfo=UTC))
    assert next_day.schedule.channel_id == "c2"


async def test_disabled_schedules_are_not_claimed(db):
    await db.set_schedule("discord", "c1", time_of_day="09:30", at=T0)
    assert await db.disable_schedule("discord", "c1", by_name="Ada") is True
    assert await db.disable_schedule("discord", "c1") is False
    assert await db.claim_due_schedules(T0 + timedelta(days=1)) == []
    assert await db.list_schedules(enabled_only=True) == []
    assert (await db.get_schedule("discord", "c1")).enabled is False
    assert (await db.history("audit"))[0].action == "schedule.disable"


async def test_concurrent_claimers_never_run_a_schedule_twice(url, db):
    for channel in range(12):
        await db.set_schedule("discord", f"c{channel}", time_of_day="09:30", at=T0)
    others = [Database(url) for _ in range(3)]
    for other in others:
        await other.start(recover=False)
    try:
        late = T0 + timedelta(days=1)
        results = await asyncio.gather(*(d.claim_due_schedules(late) for d in [db, *others, db]))
    finally:
        for other in others:
            await other.close()
    claimed = [run.schedule.channel_id for runs in results for run in runs]
    assert sorted(claimed) == sorted(f"c{channel}" for channel in range(12))


# -- audit, history and many writers --------------------------------------------------------------

async def test_audit_and_history_list_newest_first(db):
    await db.record_audit("post.delete", "u1", "Ada", "post #3", "removed by hand", at=T0)
    await db.record_audit("schedule.set", None, "cli", "discord/c1", at=T0 + timedelta(minutes=1))
    assert [a.action for a in await db.history("audit")] == ["schedule.set", "post.delete"]
    g1 = await generation(db, texts=("a",))
    g2 = await generation(db, texts=("b", "c"), platform="slack")
    await db.record_vote(g1.candidates[0].id, "u9", "👍")
    assert [g.id for g in await db.history("generations")] == [g2.id, g1.id]
    assert [g.id for g in await db.history("generations", platform="discord")] == [g1.id]
    assert [c.text for c in await db.history("candidates", limit=2)] == ["c", "b"]
    assert [c.text for c in await db.history("candidates", platform="discord")] == ["a"]
    assert [v.user_id for v in await db.history("votes")] == ["u9"]
    assert await db.history("votes", platform="slack") == []
    with pytest.raises(ValueError):
        await db.history("nonsense")


async def test_many_concurrent_writers_lose_nothing(url, db):
    gen = await generation(db, texts=tuple(f"t{i}" for i in range(4)))
    others = [Database(url) for _ in range(3)]
    for other in others:
        await other.start(recover=False)

    async def writer(database, n):
        for i in range(15):
            await database.record_vote(gen.candidates[i % 4].id, f"user-{n}-{i}", "👍")
            await database.begin_post("dryrun", text=f"writer {n} post {i}")
            await database.record_generation("discord", channel_id=f"w{n}")

    try:
        await asyncio.gather(*(writer(d, n) for n, d in enumerate([db, db, *others])))
    finally:
        for other in others:
            await other.close()
    assert sum(row.votes for row in await db.tally(gen.id)) == 5 * 15
    assert len(await db.history("posts", limit=1000)) == 5 * 15
    assert len(await db.history("generations", limit=1000)) == 5 * 15 + 1
