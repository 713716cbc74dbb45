"""Posting exactly once through the log, for the core (chat front ends, scheduler) and the CLI.

The publishers (chatbot/publishers/) only talk to their platforms; this is where a post meets the log.

    poster = Poster(db, publishers)                     # a Publishers, or a single publisher
    posted = await poster.post(ctx, candidate_id=12)    # or text="...", to="mastodon"
    usage = await poster.usage()                        # posts in the last 24 h and quota, per publisher
    withdrawn = await poster.unpost(ctx, post_id=3)     # deleted on its platform, then marked in the log

One post: the publisher is chosen (to=, else the channel's, else the default); in ONE storage transaction the text
is checked against the publisher's length rule, its earlier posts (AlreadyPosted, PostInProgress) and its quota
(QuotaReached), and recorded as pending; only then is the publisher called; then the post is settled: posted,
failed (PostFailed; the text can be posted again), or unknown (PostUnknown: it may be online; a person checks). If
the process dies in between, the next start marks it unknown: nothing is ever re-posted on its own. Every outcome
is in the audit trail.

Withdrawing a post (/unpost, `proverbot unpost`): the log is asked first whether it can be (posted, not withdrawn
yet, with a remote id); then the publisher of its platform deletes it (in a worker thread, one try); only then is it
marked deleted, with who and when, and audited. A platform that refuses or fails (UnpostFailed) leaves the log as it
was, apart from an audit entry that says so.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from chatbot.context import Context
from chatbot.publishers import (
    OutcomeUnknown,
    Publisher,
    PublishError,
    limits_of,
    title_of,
)
from chatbot.publishers.registry import Publishers, UnknownPublisher
from chatbot.scrub import scrub
from proverbot_errors import ProverbotError
from storage import Database, PostInfo


class PostFailed(ProverbotError):
    """The publisher failed; the candidate stays postable."""


class PostUnknown(ProverbotError):
    """The publisher could not tell whether the post went out; the log says "unknown" until a person settles it."""


class UnpostFailed(ProverbotError):
    """The platform did not delete the post; nothing was marked."""


@dataclass(frozen=True)
class Posted:
    post_id: int
    candidate_id: int | None
    text: str
    url: str | None
    platform: str


@dataclass(frozen=True)
class PublisherUsage:
    """One publisher's posts in the last 24 hours against its quota (what /status shows)."""

    name: str                   # as in the log: x, mastodon, bluesky, dryrun
    title: str                  # for people: X, Mastodon, Bluesky, dryrun
    posts_last_24h: int         # posted, pending or unknown: what the quota counts
    quota: int | None           # None: no quota
    default: bool               # where /post goes unless told otherwise

    @property
    def left(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.posts_last_24h)


class Poster:
    def __init__(self, db: Database, publishers: Publisher | Publishers) -> None:
        self.db = db
        self.publishers = Publishers.of(publishers)

    async def post(self, ctx: Context, candidate_id: int | None = None, *, text: str | None = None,
                   to: str | None = None) -> Posted:
        """Publish candidate `candidate_id`, or free `text`, on `to` (else the channel's or default publisher)."""
        publisher = self.publishers.for_channel(ctx.platform, ctx.channel_id, to)
        limits, title = limits_of(publisher), title_of(publisher)
        post = await self.db.begin_post(publisher.name, candidate_id=candidate_id, text=text,
                                        requested_by_id=ctx.user_id, requested_by_name=ctx.user_name,
                                        check=partial(limits.check, title), quota=limits.posts_per_day)
        try:
            result = await publisher.publish(post.text)
        except asyncio.CancelledError:             # the bot is stopping: say so now rather than at the next start
            await self.db.settle_post(post.id, "unknown", error="proverbot stopped while the post was being sent")
            await self.audit(ctx, post, "unknown: proverbot stopped while sending")
            raise
        except OutcomeUnknown as err:
            await self.db.settle_post(post.id, "unknown", error=str(err))
            await self.audit(ctx, post, f"unknown: {err}")
            raise PostUnknown(f"Posting on {title}: {err} Check the account, then record what happened with "
                              f"`proverbot db settle-post {post.id} posted --url URL` (or `failed` to allow a new "
                              "try).") from err
        except Exception as err:
            reason = why(err)
            await self.db.settle_post(post.id, "failed", error=reason)
            await self.audit(ctx, post, f"failed: {reason}")
            what = "candidate" if post.candidate_id is not None else "text"
            raise PostFailed(f"Posting on {title} failed: {reason} The {what} can be posted again.") from err
        post = await self.db.settle_post(post.id, "posted", remote_id=result.remote_id, url=result.url)
        await self.audit(ctx, post, f"posted: {post.url}")
        return Posted(post.id, post.candidate_id, post.text, post.url, post.platform)

    async def unpost(self, ctx: Context, post_id: int) -> PostInfo:
        """Delete post `post_id` on its platform, then mark it deleted (by ctx's user, now). Refused before anything
        is sent: NotFound, NotWithdrawable (not posted, already withdrawn: storage), UnknownPublisher (its platform
        is not configured here). UnpostFailed: the platform refused or failed, and nothing is marked."""
        post = await self.db.withdrawable_post(post_id)
        publisher = self.publishers.by_name.get(post.platform)      # never a stand-in: the dry run deletes nothing
        if publisher is None:
            why_not = f" ({self.publishers.note})" if self.publishers.note else ""
            raise UnknownPublisher(f"Post #{post.id} is on {post.platform}, which is not configured here{why_not}: "
                                   "nothing was sent.")
        where = f"{ctx.platform}/{ctx.channel_id} → {post.platform}"
        try:
            await publisher.delete(post.remote_id)
        except Exception as err:
            reason = why(err)
            await self.db.record_audit("post.unpost", ctx.user_id, ctx.user_name, target=f"post #{post.id}",
                                       detail=f"{where} delete failed: {reason}")
            raise UnpostFailed(f"{title_of(publisher)} did not delete post #{post.id}: {reason} Nothing was marked: "
                               "the post is still listed as posted.") from err
        return await self.db.mark_post_deleted(post.id, by_id=ctx.user_id, by_name=ctx.user_name,
                                               detail=f"{where} deleted: {post.url or post.remote_id}")

    async def check_quota(self, ctx: Context, to: str | None = None) -> None:
        """QuotaReached when a post from ctx on `to` (as post() chooses it) would be refused by the quota now."""
        publisher = self.publishers.for_channel(ctx.platform, ctx.channel_id, to)
        await self.db.check_quota(publisher.name, limits_of(publisher).posts_per_day)

    async def usage(self) -> list[PublisherUsage]:
        """Every configured publisher, the default first."""
        since = datetime.now(UTC) - timedelta(hours=24)
        ordered = [self.publishers.default, *(p for p in self.publishers if p is not self.publishers.default)]
        return [PublisherUsage(p.name, title_of(p), len(await self.db.posts_since(p.name, since)),
                               limits_of(p).posts_per_day, p is self.publishers.default) for p in ordered]

    async def audit(self, ctx: Context, post: PostInfo, detail: str) -> None:
        await self.db.record_audit("post", ctx.user_id, ctx.user_name, target=f"post #{post.id}",
                                   detail=f"{ctx.platform}/{ctx.channel_id} → {post.platform} {detail}")


def why(err: Exception) -> str:
    """A publisher's failure for people and the log: a PublishError's own words, else the exception, scrubbed."""
    return scrub(str(err) if isinstance(err, PublishError) else f"{type(err).__name__}: {err}")
