"""The audit trail and the history the CLI lists.

await db.record_audit(action, actor_id=None, actor_name=None, target="", detail="", at=None) -> int
        e.g. record_audit("post.delete", "42", "ada", "post #3", "removed from x by hand")
        (set_schedule, disable_schedule and settle_post_by_hand write their own entries)
await db.history(kind="generations", limit=20, platform=None) -> list of records, newest first
        kind: generations (GenerationInfo, without candidates), candidates (CandidateInfo, vetoed_* included),
        votes (VoteInfo), posts (PostInfo), audit (AuditInfo), blocklist (BlockedWordInfo: the words blocked from
        chat, who added each), moderation (AuditInfo: the audit entries of moderators' actions, MODERATION); a limit
        past what a database's LIMIT takes lists everything
"""

from datetime import datetime

from sqlalchemy import select

from storage.db import DatabaseCore, aware, record
from storage.models import AuditEntry, BlockedWord, Candidate, Generation, Post, Vote
from storage.records import AuditInfo, BlockedWordInfo, CandidateInfo, GenerationInfo, PostInfo, VoteInfo

MOST = 2**63 - 1  # the largest LIMIT (a 64-bit integer) any backend takes

KINDS = {
    "generations": (Generation, GenerationInfo),
    "candidates": (Candidate, CandidateInfo),
    "votes": (Vote, VoteInfo),
    "posts": (Post, PostInfo),
    "audit": (AuditEntry, AuditInfo),
    "blocklist": (BlockedWord, BlockedWordInfo),
    "moderation": (AuditEntry, AuditInfo),
}
# the audit's moderation actions
MODERATION = ("candidate.veto", "blocklist.add", "blocklist.remove", "post.unpost", "model.use", "model.reload")


def write_audit(session, action: str, actor_id: str | None, actor_name: str | None, target: str, detail: str,
                at: datetime) -> AuditEntry:
    """Add an audit entry to a write session: it commits (or not) with the action it describes."""
    entry = AuditEntry(at=at, actor_id=None if actor_id is None else str(actor_id)[:64],
                       actor_name=None if actor_name is None else str(actor_name)[:200], action=action[:64],
                       target=(target or "")[:200], detail=detail or "")
    session.add(entry)
    return entry


class HistoryAPI(DatabaseCore):
    async def record_audit(self, action: str, actor_id: str | None = None, actor_name: str | None = None,
                           target: str = "", detail: str = "", *, at: datetime | None = None) -> int:
        async with self._write() as session:
            entry = write_audit(session, action, actor_id, actor_name, target, detail, aware(at))
            await session.flush()
            return entry.id

    async def history(self, kind: str = "generations", *, limit: int = 20, platform: str | None = None) -> list:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        model, info = KINDS[kind]
        query = select(model).order_by(model.id.desc()).limit(min(max(0, limit), MOST))
        if kind == "moderation":
            query = query.where(AuditEntry.action.in_(MODERATION))
        if platform is not None:
            if model is Post:
                query = query.where(Post.platform == platform)
            elif model is Generation:
                query = query.where(Generation.platform == platform)
            elif model is Candidate:
                query = (query.join(Generation, Generation.id == Candidate.generation_id)
                         .where(Generation.platform == platform))
            elif model is Vote:
                query = (query.join(Candidate, Candidate.id == Vote.candidate_id)
                         .join(Generation, Generation.id == Candidate.generation_id)
                         .where(Generation.platform == platform))
        async with self._read() as session:
            return [record(info, row) for row in await session.scalars(query)]
