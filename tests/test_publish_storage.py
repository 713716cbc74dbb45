"""What publishing needs from the log: a posting quota counted in the same transaction as the pending post, a
check that runs before anything is written, stale pending posts marked unknown, a publisher on each schedule.
On SQLite, and on PostgreSQL when PROVERBOT_TEST_POSTGRES_URL names a server (see test_storage_api)."""

import shutil
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from chatbot.publishers import TooLong
from storage import AlreadyPosted, Database, QuotaReached
from tests.test_storage_api import fresh_url
from tests.test_storage_files import FIXTURE, sqlite_url

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


@pytest_asyncio.fixture(params=["sqlite", "postgres"], loop_scope="function")
async def db(request, tmp_path):
    database = Database(await fresh_url(request.param, tmp_path))
    await database.start()
    yield database
    await database.close()


async def post_at(db, text, at, platform="x", status="posted"):
    post = await db.begin_post(platform, text=text, at=at)
    if status != "pending":
        await db.settle_post(post.id, status, url=f"https://x.test/{post.id}", at=at)
    return post


async def test_the_quota_counts_posted_pending_and_unknown_posts_in_the_window(db):
    await post_at(db, "too old to count", T0 - timedelta(hours=25))
    await post_at(db, "one", T0 - timedelta(hours=20))
    await post_at(db, "two", T0 - timedelta(hours=3), status="pending")
    await post_at(db, "failed ones do not count", T0 - timedelta(hours=2), status="failed")
    await post_at(db, "elsewhere", T0 - timedelta(hours=1), platform="mastodon")
    third = await db.begin_post("x", text="three", quota=3, at=T0)     # 2 counted: room for one more
    assert third.status == "pending"
    with pytest.raises(QuotaReached) as refused:
        await db.begin_post("x", text="four", quota=3, at=T0 + timedelta(minutes=1))
    err = refused.value
    assert (err.platform, err.used, err.limit) == ("x", 3, 3)
    assert err.next_at == T0 - timedelta(hours=20) + timedelta(hours=24)    # when "one" leaves the window
    assert str(err) == ("The posting quota on x is used up: 3 posts in the last 24 hours, at most 3. The next post "
                        "can go out at 13:00 UTC (in 3 h 59 min).")
    assert (await db.history("posts"))[0].text == "three"        # "four" was never recorded
    assert (await db.begin_post("mastodon", text="four", quota=3, at=T0)).status == "pending"   # per platform
    later = T0 + timedelta(hours=4, minutes=1)
    assert (await db.begin_post("x", text="four", quota=3, at=later)).status == "pending"


async def test_a_lowered_quota_waits_for_enough_posts_to_leave(db):
    for hour in (10, 8, 6):
        await post_at(db, f"at -{hour} h", T0 - timedelta(hours=hour))
    with pytest.raises(QuotaReached) as refused:
        await db.begin_post("x", text="new", quota=2, at=T0)
    assert refused.value.next_at == T0 - timedelta(hours=8) + timedelta(hours=24)


async def test_a_duplicate_is_refused_as_such_even_when_the_quota_is_used_up(db):
    await post_at(db, "the same text", T0 - timedelta(hours=1))
    with pytest.raises(AlreadyPosted):
        await db.begin_post("x", text="The  same TEXT", quota=1, at=T0)


async def test_the_check_runs_before_anything_is_written(db):
    def refuse(text):
        raise TooLong(f"{len(text)} is too long")

    with pytest.raises(TooLong, match="20 is too long"):
        await db.begin_post("x", text="twenty characters...", check=refuse)
    assert await db.history("posts") == []
    seen = []
    await db.begin_post("x", text="fine", check=seen.append)
    assert seen == ["fine"]


async def test_stale_pending_posts_become_unknown_fresh_ones_stay(db):
    old = await post_at(db, "old", T0 - timedelta(hours=1), status="pending")
    new = await post_at(db, "new", T0, status="pending")
    assert await db.mark_stale_posts_unknown(T0 - timedelta(minutes=30)) == 1
    assert (await db.get_post(old.id)).status == "unknown"
    assert (await db.get_post(new.id)).status == "pending"


async def test_a_schedule_names_its_publisher(db):
    schedule = await db.set_schedule("discord", "c1", time_of_day="09:00", publisher="mastodon", at=T0)
    assert schedule.publisher == "mastodon"
    assert (await db.get_schedule("discord", "c1")).publisher == "mastodon"
    assert "posts to mastodon" in (await db.history("audit"))[0].detail
    again = await db.set_schedule("discord", "c1", time_of_day="10:00", at=T0)
    assert again.publisher is None


async def test_an_old_log_upgrades_with_schedules_on_the_default_publisher(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    db = Database(sqlite_url(path))
    await db.start()
    try:
        assert db.migrated == ("0001", "0005")
        assert [s.publisher for s in await db.list_schedules()] == [None]
    finally:
        await db.close()
