"""Preference pairs: what the votes say, as (prompt, chosen, rejected) for tuning a run on them (issue 17).

await db.preference_pairs(run_name=None) -> list[PreferencePair]
        every pair of every voted batch (of one run if named), oldest batch first

One batch (generation) gives pairs when it has a chosen candidate: the one posted from it (a post that is online:
posted and not withdrawn), else the one with the most votes; a tie for the most votes and a batch nobody voted on
give none. The chosen one is preferred over each candidate of the batch with fewer votes (margin: the difference),
and a vetoed candidate loses against every other (its votes do not count: it scores -1, below any candidate nobody
voted for). Only finished batches and candidates the filter kept count; a removed vote does not.

    batch "thou shalt": A 3 votes (posted), B 1 vote, C no vote, D vetoed
    pairs: A>B (2), A>C (3), A>D (4), B>D (2), C>D (1)

PreferencePair is defined here, not in storage/records.py, because it is this module's alone.
"""

from dataclasses import dataclass

from sqlalchemy import exists, func, select

from storage.db import DatabaseCore
from storage.models import Candidate, Generation, Post, Vote

VETOED = -1  # a vetoed candidate's score: below every candidate that was not vetoed


@dataclass(frozen=True)
class PreferencePair:
    generation_id: int
    run_name: str | None
    checkpoint_id: str | None   # the checkpoint that sampled the batch
    prompt: str                 # the generation's prefix ("" for none); chosen and rejected start with it
    chosen_id: int
    chosen: str
    rejected_id: int
    rejected: str
    margin: int                 # chosen's votes minus rejected's (a vetoed candidate scores -1)


@dataclass(frozen=True)
class Ballot:
    """One usable candidate of a batch, as the votes left it."""

    candidate_id: int
    text: str
    score: int                  # counted votes, or VETOED
    posted: bool                # online from this batch (posted, not withdrawn)


def batch_pairs(ballots: list[Ballot]) -> list[tuple[Ballot, Ballot]]:
    """(chosen, rejected) pairs of one batch, in batch order, by the rules above."""
    if not any(b.score > 0 for b in ballots):
        return []
    chosen = choose(ballots)
    if chosen is None:
        return []
    pairs = [(chosen, b) for b in ballots if b.score < chosen.score]
    losers = [b for b in ballots if b.score == VETOED]
    return pairs + [(w, b) for b in losers for w in ballots if w.score != VETOED and w is not chosen]


def choose(ballots: list[Ballot]) -> Ballot | None:
    """The one posted candidate (not vetoed since), else the single top-voted one; None on a tie."""
    posted = [b for b in ballots if b.posted and b.score != VETOED]
    if len(posted) == 1:
        return posted[0]
    top = max(b.score for b in ballots)
    tops = [b for b in ballots if b.score == top]
    return tops[0] if len(tops) == 1 else None


def ballots_query(run_name: str | None):
    """One row per usable candidate of a finished batch: its generation, text, counted votes, veto and post."""
    votes = (select(func.count(Vote.id)).where(Vote.candidate_id == Candidate.id, Vote.removed_at.is_(None))
             .scalar_subquery())
    online = exists().where(Post.candidate_id == Candidate.id, Post.status == "posted", Post.deleted_at.is_(None))
    query = (select(Generation.id, Generation.run_name, Generation.checkpoint_id, Generation.prefix, Candidate.id,
                    Candidate.text, Candidate.vetoed_at.is_not(None), votes, online)
             .join(Candidate, Candidate.generation_id == Generation.id)
             .where(Generation.status == "ok", Candidate.usable.is_(True))
             .order_by(Generation.id, Candidate.position))
    return query if run_name is None else query.where(Generation.run_name == run_name)


class PreferencesAPI(DatabaseCore):
    async def preference_pairs(self, run_name: str | None = None) -> list[PreferencePair]:
        """Every (chosen, rejected) pair the votes give, of the batches sampled by `run_name` (None: every run)."""
        async with self._read() as session:
            rows = (await session.execute(ballots_query(run_name))).all()
        batches: dict[int, tuple[tuple, list[Ballot]]] = {}
        for gid, run, checkpoint, prefix, cid, text, vetoed, votes, online in rows:
            batch = batches.setdefault(gid, ((gid, run, checkpoint, prefix or ""), []))[1]
            batch.append(Ballot(cid, text, VETOED if vetoed else votes, bool(online)))
        return [PreferencePair(*generation, chosen.candidate_id, chosen.text, rejected.candidate_id, rejected.text,
                               chosen.score - rejected.score)
                for generation, ballots in batches.values() for chosen, rejected in batch_pairs(ballots)]
