"""Moderation: vetoed candidates, the blocklist kept in the log, and a member's recent requests (for the limits).

await db.veto(candidate_id, by_id=None, by_name=None, at=None) -> CandidateInfo
        the candidate can never be posted (begin_post refuses it, whoever asks) and its votes stop counting (tally);
        final, with an audit entry "candidate.veto" in the same transaction. NotFound, or ModerationRefused when it
        is already vetoed, was filtered out, or is posted (withdraw it with /unpost first), being posted or unknown
await db.block_word(word, key, by_id=None, by_name=None, at=None) -> bool
        adds `word` to the blocklist (audit "blocklist.add"); False when a word of the same key is on it already.
        key: model.filters.blocked_key(word) (folded, single spaces), computed by the caller: storage knows no model.
        ModerationRefused past MAX_BLOCKED words
await db.unblock_word(key, by_id=None, by_name=None, at=None) -> str | None
        removes the word of that key (audit "blocklist.remove"); the word as it was written, or None if absent
await db.blocked_words() -> list[BlockedWordInfo]      in key order
await db.requests_since(platform, user_id, since) -> list[GenerationInfo]
        that member's generations since `since` (any channel, oldest first), failed ones left out: what
        chatbot/limits.py counts, so that every process sharing the log agrees
"""

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from storage.db import DatabaseCore, aware, record
from storage.errors import ModerationRefused, not_found
from storage.generations import clip
from storage.history import write_audit
from storage.models import BlockedWord, Candidate, Generation, Post
from storage.records import BlockedWordInfo, CandidateInfo, GenerationInfo
from storage.votes import veto_note

MAX_BLOCKED = 1000      # words on the blocklist at most: each sampled text is matched against all of them


class ModerationAPI(DatabaseCore):
    async def veto(self, candidate_id: int, *, by_id: str | None = None, by_name: str | None = None,
                   at: datetime | None = None) -> CandidateInfo:
        candidate_id, at = self._id(candidate_id, "candidate"), aware(at)
        async with self._write() as session:
            candidate = await session.get(Candidate, candidate_id)
            if candidate is None:
                raise not_found("candidate", candidate_id)
            await self._check_vetoable(session, candidate)
            candidate.vetoed_at, candidate.vetoed_by_id = at, clip(by_id, 64)
            candidate.vetoed_by_name = clip(by_name, 200)
            write_audit(session, "candidate.veto", by_id, by_name, f"candidate #{candidate.id}", candidate.text, at)
            await session.flush()
            return record(CandidateInfo, candidate)

    @staticmethod
    async def _check_vetoable(session, candidate: Candidate) -> None:
        if candidate.vetoed_at is not None:
            raise ModerationRefused(f"Candidate #{candidate.id} was already {veto_note(candidate)}: a veto is final.")
        if not candidate.usable:
            reason = (candidate.reason or "unusable").replace("_", " ")
            raise ModerationRefused(f"Candidate #{candidate.id} was filtered out ({reason}): it cannot be posted "
                                    "anyway.")
        post = await session.scalar(select(Post).where(Post.candidate_id == candidate.id, Post.deleted_at.is_(None),
                                                       Post.status != "failed").order_by(Post.id))
        if post is None:
            return
        if post.status == "posted":
            raise ModerationRefused(f"Candidate #{candidate.id} is already posted on {post.platform} (post "
                                    f"#{post.id}): a veto cannot take it back; /unpost #{post.id} withdraws it.")
        raise ModerationRefused(f"Candidate #{candidate.id} is being posted on {post.platform} (post #{post.id}, "
                                f"{post.status}): a veto cannot stop it.")

    async def block_word(self, word: str, key: str, *, by_id: str | None = None, by_name: str | None = None,
                         at: datetime | None = None) -> bool:
        at = aware(at)
        async with self._write() as session:
            if await session.scalar(select(func.count()).select_from(BlockedWord)) >= MAX_BLOCKED:
                raise ModerationRefused(f"The blocklist holds {MAX_BLOCKED:,} words, the most it takes: remove some "
                                        "first.")
            try:
                async with session.begin_nested():
                    session.add(BlockedWord(word_key=key[:200], word=word[:200], added_at=at,
                                            added_by_id=clip(by_id, 64), added_by_name=clip(by_name, 200)))
            except IntegrityError:
                return False
            write_audit(session, "blocklist.add", by_id, by_name, "blocklist", word, at)
            return True

    async def unblock_word(self, key: str, *, by_id: str | None = None, by_name: str | None = None,
                           at: datetime | None = None) -> str | None:
        at = aware(at)
        async with self._write() as session:
            word = await session.scalar(delete(BlockedWord).where(BlockedWord.word_key == key[:200])
                                        .returning(BlockedWord.word))
            if word is not None:
                write_audit(session, "blocklist.remove", by_id, by_name, "blocklist", word, at)
            return word

    async def blocked_words(self) -> list[BlockedWordInfo]:
        async with self._read() as session:
            rows = await session.scalars(select(BlockedWord).order_by(BlockedWord.word_key))
            return [record(BlockedWordInfo, row) for row in rows]

    async def requests_since(self, platform: str, user_id: str, since: datetime) -> list[GenerationInfo]:
        query = (select(Generation).where(Generation.platform == platform, Generation.user_id == clip(user_id, 64),
                                          Generation.created_at >= aware(since), Generation.status != "failed")
                 .order_by(Generation.created_at, Generation.id))
        async with self._read() as session:
            return [record(GenerationInfo, row) for row in await session.scalars(query)]
