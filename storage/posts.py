"""Posts: recorded as pending BEFORE a publisher is called, settled after; nothing is posted twice.

await db.begin_post(platform, candidate_id=None, text=None, requested_by_id=None, requested_by_name=None,
                    check=None, quota=None, window=timedelta(hours=24), at=None) -> PostInfo (status pending)
        Exactly one of candidate_id / text, and only what could be voted for: a candidate the filter rejected, or an
        empty text (or one with a NUL character), is Unusable, whichever front end names it, by vote or by id.
        A post is unique per (platform, normalised text) (normalise_text: NFKC, case-folded, whitespace collapsed),
        so a candidate is never posted twice on a platform, and neither is the same text given freely. Raises
        AlreadyPosted (with .url) when it went out, PostInProgress when it is pending or "unknown" (the bot stopped
        mid-post: a human checks the platform, then settles it). A failed post begins again: same row, attempts + 1.
        check(text), when given, runs first inside the transaction: whatever it raises (e.g. "too long") propagates
        and nothing is written. quota: at most that many posts on the platform in any `window`, counted as
        posts_since counts them, checked in the same transaction as the insert; QuotaReached says when a post
        leaves the window (on SQLite the check and the insert are serialised with other writers).
await db.settle_post(post_id, status, remote_id=None, url=None, error=None, at=None) -> PostInfo
        the publisher's outcome: status is "posted", "failed" or "unknown". A post recorded as posted is final:
        settling it again is refused (PostFinal), whatever the new status or URL
await db.settle_post_by_hand(post_id, status, url=None, remote_id=None, by=None, at=None) -> PostInfo
        what a person found on the platform (`proverbot db settle-post`), audited in the same transaction with what
        changed: a pending or unknown post becomes "posted" or "failed"; a failed one may become "posted" (the
        platform kept a post whose call failed, e.g. after a timeout); a failed one stays failed (nothing to settle)
await db.get_post(post_id) -> PostInfo
await db.withdrawable_post(post_id) -> PostInfo
        the post, when it can be withdrawn from its platform (/unpost): posted, not withdrawn yet, with a remote id;
        else NotFound, or NotWithdrawable saying why (pending, failed, unknown, already withdrawn by whom and when)
await db.mark_post_deleted(post_id, by_id=None, by_name=None, detail="", at=None) -> PostInfo
        the platform deleted it: deleted_at and who are recorded, with an audit entry "post.unpost" in the same
        transaction; refused (NotWithdrawable) as withdrawable_post refuses, e.g. when another moderator was first.
        A withdrawn post stays "posted" (its text is not posted there again, and it counted for the quota)
await db.check_quota(platform, quota, window=timedelta(hours=24), at=None) -> None
        QuotaReached when the quota leaves no post now (what begin_post would refuse): a cron job can skip its
        sampling
await db.posts_since(platform, since) -> list[PostInfo]
        for the quota: posts that went out since `since`, or may have (pending, unknown), oldest first
await db.mark_stale_posts_unknown(before) -> int
        stale pending posts become unknown (storage/db.py's rule): those of processes that stopped beating, and
        those with no owner last touched before `before` (a CLI run that died mid-post); returns how many
"""

import hashlib
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from storage.db import DatabaseCore, aware, record
from storage.errors import (
    AlreadyPosted,
    PostFinal,
    PostInProgress,
    QuotaReached,
    NotWithdrawable,
    StorageError,
    Unusable,
    not_found,
)
from storage.generations import clip
from storage.history import write_audit
from storage.models import Post
from storage.records import PostInfo
from storage.votes import usable_candidate

SETTLED = ("posted", "failed", "unknown")
BY_HAND = ("posted", "failed")
DAY = timedelta(hours=24)
WHEN = func.coalesce(Post.posted_at, Post.updated_at)  # when a post counts for the quota


def counted_since(platform: str, since: datetime):
    """The posts on `platform` that count for its quota since `since`: posted, or that may have been (pending,
    unknown)."""
    return and_(Post.platform == platform, or_(
        and_(Post.status == "posted", Post.posted_at >= since),
        and_(Post.status.in_(("pending", "unknown")), Post.updated_at >= since)))


def normalise_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def check_postable(text: str, subject: str) -> None:
    """Unusable unless `text` has something to post and no NUL character (which no platform takes and PostgreSQL
    cannot store); `subject` is "The text" or "Candidate #3"."""
    if not text.strip():
        raise Unusable(f"{subject} is empty: there is nothing to post.")
    if "\x00" in text:
        raise Unusable(f"{subject} contains a NUL character (\\x00): it cannot be posted.")


def where(post: Post) -> str:
    return post.url or (f"remote id {post.remote_id}" if post.remote_id else "no link recorded")


def refusal(post: Post) -> AlreadyPosted | PostInProgress:
    if post.status == "posted" and post.deleted_at is not None:
        return AlreadyPosted(f"That text was posted on {post.platform} and withdrawn ({withdrawn(post)}; post "
                             f"#{post.id}): it is not posted there again.", post.id, post.platform, post.url,
                             post.remote_id)
    if post.status == "posted":
        return AlreadyPosted(f"That text was already posted on {post.platform}: {where(post)} (post #{post.id}, "
                             f"{post.posted_at or post.updated_at:%Y-%m-%d %H:%M} UTC).",
                             post.id, post.platform, post.url, post.remote_id)
    if post.status == "pending":
        return PostInProgress(f"That text is being posted on {post.platform} right now (post #{post.id}, started "
                              f"{post.updated_at:%H:%M} UTC).", post.id, post.platform, post.status)
    return PostInProgress(f"Post #{post.id} of that text on {post.platform} has an unknown outcome: proverbot stopped "
                          "while posting it. A person must check the account, then record what happened with "
                          f"`proverbot db settle-post {post.id} posted --url URL` (or `failed` to allow a new try).",
                          post.id, post.platform, post.status)


class PostsAPI(DatabaseCore):
    async def begin_post(self, platform: str, candidate_id: int | None = None, text: str | None = None, *,
                         requested_by_id: str | None = None, requested_by_name: str | None = None,
                         check: Callable[[str], None] | None = None, quota: int | None = None,
                         window: timedelta = DAY, at: datetime | None = None) -> PostInfo:
        if (candidate_id is None) == (text is None):
            raise ValueError("begin_post takes exactly one of candidate_id and text")
        if candidate_id is not None:
            candidate_id = self._id(candidate_id, "candidate")
        if quota is not None and quota < 1:
            raise ValueError(f"quota must be at least 1 (or None for no quota), not {quota}")
        at = aware(at)
        for _ in range(3):  # a concurrent insert of the same key (PostgreSQL) makes the next round find it
            try:
                async with self._write() as session:
                    return await self._begin(session, platform, candidate_id, text, requested_by_id,
                                             requested_by_name, check, (quota, window), at)
            except IntegrityError:
                continue
        raise StorageError(f"Could not record the post on {platform}: other writers kept changing it; try again.")

    async def _begin(self, session, platform, candidate_id, text, by_id, by_name, check, quota, at) -> PostInfo:
        if candidate_id is not None:
            text = await usable_candidate(session, candidate_id, "posted")
        check_postable(text, "The text" if candidate_id is None else f"Candidate #{candidate_id}")
        if check is not None:
            check(text)
        key = text_key(text)
        post = await session.scalar(select(Post).where(Post.platform == platform, Post.text_key == key))
        if post is not None and post.status != "failed":
            raise refusal(post)
        if quota[0] is not None:
            await self._check_quota(session, platform, *quota, at)
        if post is None:
            post = Post(platform=platform, candidate_id=candidate_id, text=text, text_key=key, status="pending",
                        attempts=1, created_at=at)
            session.add(post)
        else:
            post.status, post.attempts = "pending", post.attempts + 1
            post.candidate_id = candidate_id if candidate_id is not None else post.candidate_id
        post.requested_by_id, post.requested_by_name = clip(by_id, 64), clip(by_name, 200)
        post.updated_at, post.owner_id = at, self.process_id
        await session.flush()
        return record(PostInfo, post)

    async def settle_post(self, post_id: int, status: str, *, remote_id: str | None = None, url: str | None = None,
                          error: str | None = None, at: datetime | None = None) -> PostInfo:
        if status not in SETTLED:
            raise ValueError(f"status must be one of {SETTLED}, not {status!r}")
        async with self._write() as session:
            post = await self._unposted(session, post_id)
            settle(post, status, remote_id, url, error, aware(at))
            await session.flush()
            return record(PostInfo, post)

    async def settle_post_by_hand(self, post_id: int, status: str, *, url: str | None = None,
                                  remote_id: str | None = None, by: str | None = None,
                                  at: datetime | None = None) -> PostInfo:
        if status not in BY_HAND:
            raise ValueError(f"status must be one of {BY_HAND}, not {status!r}")
        if status == "failed" and (url or remote_id):
            raise StorageError("A URL or remote id is for a post found online: settle it as posted, not failed.")
        at = aware(at)
        async with self._write() as session:
            post = await self._unposted(session, post_id)
            if post.status == "failed" == status:
                raise StorageError(f"Post #{post.id} on {post.platform} is already recorded as failed: nothing to "
                                   "settle (it can be posted again).")
            before = (post.status, post.url, post.remote_id)
            settle(post, status, remote_id, url, None if status == "posted" else "settled as failed by hand", at)
            write_audit(session, "post.settle", None, by, f"post #{post.id}", changes(before, post), at)
            await session.flush()
            return record(PostInfo, post)

    async def _unposted(self, session, post_id: int) -> Post:
        """The post, unless it is recorded as posted: that is final (its text is never posted there again)."""
        post = await self._post(session, post_id)
        if post.status == "posted":
            raise PostFinal(f"Post #{post.id} on {post.platform} is already posted ({where(post)}): that is final, "
                            "so there is nothing to settle (settling is for pending, unknown or failed posts).")
        return post

    async def get_post(self, post_id: int) -> PostInfo:
        async with self._read() as session:
            return record(PostInfo, await self._post(session, post_id))

    async def withdrawable_post(self, post_id: int) -> PostInfo:
        async with self._read() as session:
            return record(PostInfo, await self._withdrawable(session, post_id))

    async def mark_post_deleted(self, post_id: int, *, by_id: str | None = None, by_name: str | None = None,
                                detail: str = "", at: datetime | None = None) -> PostInfo:
        at = aware(at)
        async with self._write() as session:
            post = await self._withdrawable(session, post_id)
            post.deleted_at, post.deleted_by_id, post.deleted_by_name = at, clip(by_id, 64), clip(by_name, 200)
            write_audit(session, "post.unpost", by_id, by_name, f"post #{post.id}", detail, at)
            await session.flush()
            return record(PostInfo, post)

    async def _post(self, session, post_id: int) -> Post:
        post = await session.get(Post, self._id(post_id, "post"))
        if post is None:
            raise not_found("post", post_id)
        return post

    async def _withdrawable(self, session, post_id: int) -> Post:
        post = await self._post(session, post_id)
        if post.deleted_at is not None:
            raise NotWithdrawable(f"Post #{post.id} on {post.platform} is already withdrawn ({withdrawn(post)}): "
                                  "nothing was sent.")
        if post.status == "pending":
            raise NotWithdrawable(f"Post #{post.id} on {post.platform} is being posted right now: withdraw it once "
                                  "it is posted.")
        if post.status == "unknown":
            raise NotWithdrawable(f"Post #{post.id} on {post.platform} has an unknown outcome: check the account, "
                                  f"record it with `proverbot db settle-post {post.id} posted --url URL "
                                  "--remote-id ID`, then withdraw it.")
        if post.status != "posted":
            raise NotWithdrawable(f"Post #{post.id} on {post.platform} failed: it is not online, so there is nothing "
                                  "to withdraw.")
        if not post.remote_id:
            raise NotWithdrawable(f"Post #{post.id} on {post.platform} has no remote id in the log (it was settled by "
                                  "hand without --remote-id), so proverbot cannot name it to the platform: delete it "
                                  "there by hand.")
        return post

    @staticmethod
    async def _check_quota(session, platform: str, quota: int, window: timedelta, at: datetime) -> None:
        times = list(await session.scalars(select(WHEN).where(counted_since(platform, at - window)).order_by(WHEN)))
        if len(times) < quota:
            return
        next_at = times[len(times) - quota] + window  # once this one leaves the window, a post may go out
        wait = max(next_at - at, timedelta(0))
        raise QuotaReached(
            f"The posting quota on {platform} is used up: {len(times)} posts in the last {hours(window)}, at most "
            f"{quota}. The next post can go out at {next_at:%H:%M} UTC (in {duration(wait)}).",
            platform, len(times), quota, next_at)

    async def check_quota(self, platform: str, quota: int | None, window: timedelta = DAY,
                          at: datetime | None = None) -> None:
        """QuotaReached when no post on `platform` fits its quota now, as begin_post would say; nothing is written."""
        if quota is not None:
            async with self._read() as session:
                await self._check_quota(session, platform, quota, window, aware(at))

    async def posts_since(self, platform: str, since: datetime) -> list[PostInfo]:
        query = select(Post).where(counted_since(platform, aware(since))).order_by(WHEN, Post.id)
        async with self._read() as session:
            return [record(PostInfo, post) for post in await session.scalars(query)]

    async def mark_stale_posts_unknown(self, before: datetime) -> int:
        return await self._mark_pending_unknown(before)


def settle(post: Post, status: str, remote_id: str | None, url: str | None, error: str | None, at: datetime) -> None:
    post.status, post.updated_at = status, at
    if status == "posted":
        post.posted_at = at
        post.remote_id = clip(remote_id, 200) if remote_id is not None else post.remote_id
        post.url = url if url is not None else post.url
    if error is not None:
        post.last_error = str(error)


def changes(before: tuple[str, str | None, str | None], post: Post) -> str:
    """What a settle changed, for the audit: "status unknown → posted; url none → https://x.com/p/9"."""
    after = (post.status, post.url, post.remote_id)
    return "; ".join(f"{name} {old or 'none'} → {new or 'none'}" for name, old, new
                     in zip(("status", "url", "remote id"), before, after) if old != new)


def withdrawn(post: Post) -> str:
    """'2026-11-27 15:40 UTC by ada'."""
    who = post.deleted_by_name or post.deleted_by_id
    return f"{post.deleted_at:%Y-%m-%d %H:%M} UTC" + (f" by {who}" if who else "")


def hours(window: timedelta) -> str:
    return f"{window.total_seconds() / 3600:g} hours"


def duration(wait: timedelta) -> str:
    """'3 h 05 min', '12 min', 'under a minute'."""
    minutes = int(wait.total_seconds() // 60)
    if minutes < 1:
        return "under a minute"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
