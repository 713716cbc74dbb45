"""Votes: reactions on the chat messages that show candidates.

await db.record_vote(candidate_id, user_id, emoji, user_name=None, at=None) -> VoteInfo
        one vote per (candidate, user, emoji): recording it again changes nothing; a removed one is revived.
        Unusable for a candidate the filter rejected or a moderator vetoed: nobody votes for what cannot be posted
await db.remove_vote(candidate_id, user_id, emoji, at=None) -> bool
        marks it removed (removed_at), never deletes it; False when there was no active vote
await db.clear_votes(platform, message_id, emoji=None, at=None) -> int
        every active vote (of that emoji) on the candidate shown by that message marked removed (a reaction clear)
await db.votes_for(candidate_id, include_removed=False) -> list[VoteInfo]
await db.tally(generation_id, emoji=None) -> list[TallyRow]
        per candidate in batch order: active votes (of one emoji if given) and distinct voters; a vetoed candidate's
        votes do not count (0, vetoed=True)
winner(rows) -> TallyRow | None
        the usable, unvetoed candidate with the most votes, ties going to the earlier one; None when nobody voted
await usable_candidate(session, candidate_id, action) -> str
        the text of a candidate that may be voted for or posted (begin_post uses it too): NotFound, or Unusable
        (filtered out, or vetoed: storage/moderation.py)
Every id is checked first (DatabaseCore._id): one that no row can have is NotFound, whatever the backend.
"""

from datetime import datetime
from functools import cache

from sqlalchemy import and_, case, distinct, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from storage.db import DatabaseCore, aware, record
from storage.errors import Unusable, filtered_out, not_found
from storage.generations import clip
from storage.models import Candidate, Generation, Vote
from storage.records import TallyRow, VoteInfo

UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # dialects with INSERT ... ON CONFLICT


@cache
def upsert_vote(dialect: str):
    statement = UPSERT[dialect](Vote)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["candidate_id", "user_id", "emoji"],
        set_={"removed_at": None,
              "voted_at": case((Vote.removed_at.is_(None), Vote.voted_at), else_=new.voted_at),
              "user_name": func.coalesce(new.user_name, Vote.user_name)},
    ).returning(*Vote.__table__.columns)


def winner(rows: list[TallyRow]) -> TallyRow | None:
    voted = [row for row in rows if row.usable and not row.vetoed and row.votes > 0]
    return min(voted, key=lambda row: (-row.votes, row.position)) if voted else None


async def usable_candidate(session, candidate_id: int, action: str) -> str:
    """The text of candidate `candidate_id` if the filter kept it and no moderator vetoed it, e.g. action "posted":
    "Candidate #1 was filtered out (blocked word) and cannot be posted." Same rule whichever front end names the
    candidate, by vote or by id, and whoever posts it (/post, the votes' winner, the schedule, the CLI)."""
    found = await session.get(Candidate, candidate_id)
    if found is None:
        raise not_found("candidate", candidate_id)
    if not found.usable:
        raise filtered_out(candidate_id, found.reason, action)
    if found.vetoed_at is not None:
        raise vetoed(found, action)
    return found.text


def vetoed(candidate: Candidate, action: str) -> Unusable:
    """Unusable("Candidate #4 was vetoed by ada (2026-11-27 15:40 UTC) and can never be posted.")"""
    return Unusable(f"Candidate #{candidate.id} was {veto_note(candidate)} and can never be {action}.")


def veto_note(candidate: Candidate) -> str:
    """'vetoed by ada (2026-11-27 15:40 UTC)'."""
    who = candidate.vetoed_by_name or candidate.vetoed_by_id
    return f"vetoed{f' by {who}' if who else ''} ({candidate.vetoed_at:%Y-%m-%d %H:%M} UTC)"


class VotesAPI(DatabaseCore):
    async def record_vote(self, candidate_id: int, user_id: str, emoji: str, *, user_name: str | None = None,
                          at: datetime | None = None) -> VoteInfo:
        candidate_id = self._id(candidate_id, "candidate")
        values = {"candidate_id": candidate_id, "user_id": clip(user_id, 64), "user_name": clip(user_name, 200),
                  "emoji": clip(emoji, 64), "voted_at": aware(at), "removed_at": None}
        async with self._write() as session:
            await usable_candidate(session, candidate_id, "voted for")
            if session.bind.dialect.name in UPSERT:
                return await self._upsert_vote(session, values)
            return await self._insert_or_revive_vote(session, values)

    async def _upsert_vote(self, session, values: dict) -> VoteInfo:
        """One statement (SQLite, PostgreSQL): insert, or revive a removed vote, or leave an active one as it is."""
        row = (await session.execute(upsert_vote(session.bind.dialect.name), values)).one()
        return VoteInfo(**row._mapping)

    async def _insert_or_revive_vote(self, session, values: dict) -> VoteInfo:
        """Any other database: insert in a savepoint; on a duplicate, revive the existing row."""
        try:
            async with session.begin_nested():
                await session.execute(insert(Vote).values(**values))
        except IntegrityError:
            pass  # the vote exists: revive it below
        vote = await session.scalar(select(Vote).where(Vote.candidate_id == values["candidate_id"],
                                                       Vote.user_id == values["user_id"],
                                                       Vote.emoji == values["emoji"]))
        if vote.removed_at is not None:
            vote.removed_at, vote.voted_at = None, values["voted_at"]
        vote.user_name = values["user_name"] or vote.user_name
        await session.flush()
        return record(VoteInfo, vote)

    async def remove_vote(self, candidate_id: int, user_id: str, emoji: str, *, at: datetime | None = None) -> bool:
        candidate_id = self._id(candidate_id, "candidate")
        async with self._write() as session:
            result = await session.execute(
                update(Vote).where(Vote.candidate_id == candidate_id, Vote.user_id == clip(user_id, 64),
                                   Vote.emoji == clip(emoji, 64), Vote.removed_at.is_(None))
                .values(removed_at=aware(at)))
            return result.rowcount == 1

    async def clear_votes(self, platform: str, message_id: str, *, emoji: str | None = None,
                          at: datetime | None = None) -> int:
        shown_by = (select(Candidate.id).join(Generation, Generation.id == Candidate.generation_id)
                    .where(Generation.platform == platform, Candidate.message_id == str(message_id)))
        active = and_(Vote.candidate_id.in_(shown_by), Vote.removed_at.is_(None))
        if emoji is not None:
            active = and_(active, Vote.emoji == emoji)
        async with self._write() as session:
            result = await session.execute(update(Vote).where(active).values(removed_at=aware(at)))
            return result.rowcount

    async def votes_for(self, candidate_id: int, *, include_removed: bool = False) -> list[VoteInfo]:
        candidate_id = self._id(candidate_id, "candidate")
        query = select(Vote).where(Vote.candidate_id == candidate_id)
        if not include_removed:
            query = query.where(Vote.removed_at.is_(None))
        async with self._read() as session:
            return [record(VoteInfo, vote) for vote in await session.scalars(query.order_by(Vote.id))]

    async def tally(self, generation_id: int, *, emoji: str | None = None) -> list[TallyRow]:
        generation_id = self._id(generation_id, "generation")
        joined = and_(Vote.candidate_id == Candidate.id, Vote.removed_at.is_(None), Candidate.vetoed_at.is_(None))
        if emoji is not None:
            joined = and_(joined, Vote.emoji == emoji)
        columns = (Candidate.id, Candidate.position, Candidate.text, Candidate.usable, Candidate.message_id)
        query = (select(*columns, func.count(Vote.id), func.count(distinct(Vote.user_id)), Candidate.vetoed_at)
                 .outerjoin(Vote, joined).where(Candidate.generation_id == generation_id)
                 .group_by(*columns, Candidate.vetoed_at)
                 .order_by(Candidate.position))
        async with self._read() as session:
            rows = (await session.execute(query)).all()
            if not rows and await session.get(Generation, generation_id) is None:
                raise not_found("generation", generation_id)
        return [TallyRow(*row[:-1], vetoed=row[-1] is not None) for row in rows]
