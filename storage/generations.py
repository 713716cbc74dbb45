"""Generations and their candidates.

await db.record_generation(platform, channel_id=..., server_id=..., user_id=..., user_name=..., prefix=...,
                           temperature=..., top_k=..., top_p=..., length=..., count=..., seed=..., run_name=...,
                           checkpoint_id=..., device=..., at=None) -> int
        a pending generation, recorded before sampling starts
await db.finish_generation(id, candidates, duration=..., samples=..., tokens=..., run_name=..., checkpoint_id=...,
                           device=..., at=None) -> GenerationInfo
        the outcome and ALL candidates in one transaction (a crash leaves it pending with none, never half a
        batch); candidates are NewCandidate, model.candidates.Candidate (with .verdict) or plain strings
await db.fail_generation(id, error, duration=None, at=None)
await db.fail_stale_generations(before) -> int
        stale pending generations become failed, "proverbot stopped while sampling" (storage/db.py's rule): those of
        processes that stopped beating, and those with no owner recorded before `before` (a CLI run that died
        mid-sample); returns how many
await db.get_generation(id) -> GenerationInfo (with candidates)             NotFound if missing
await db.latest_generation(platform, channel_id, include_unfinished=False) -> GenerationInfo | None
await db.set_candidate_message(candidate_id, message_id)                    once the chat message is sent
await db.candidate_by_message(platform, message_id) -> CandidateInfo | None
await db.candidate_in_channel(platform, channel_id, candidate_id) -> CandidateInfo | None   in a batch there?
"""

from datetime import datetime

from sqlalchemy import insert, select, update

from storage.db import DatabaseCore, aware, record
from storage.errors import NotFound, StorageError
from storage.models import Candidate, Generation
from storage.records import CandidateInfo, GenerationInfo, NewCandidate


def as_new_candidate(item) -> NewCandidate:
    """NewCandidate from a NewCandidate, a str, or any object with .text/.tokens and .verdict or .usable."""
    if isinstance(item, NewCandidate):
        return item
    if isinstance(item, str):
        return NewCandidate(item)
    verdict = getattr(item, "verdict", item)
    return NewCandidate(text=item.text, tokens=int(getattr(item, "tokens", 0) or 0),
                        usable=bool(getattr(verdict, "usable", True)), reason=getattr(verdict, "reason", None),
                        detail=getattr(verdict, "detail", "") or "")


def clip(value: str | None, size: int) -> str | None:
    return None if value is None else str(value)[:size]


class GenerationsAPI(DatabaseCore):
    async def record_generation(self, platform: str, *, channel_id: str | None = None, server_id: str | None = None,
                                user_id: str | None = None, user_name: str | None = None, prefix: str = "",
                                temperature: float | None = None, top_k: int | None = None,
                                top_p: float | None = None, length: int | None = None, count: int | None = None,
                                seed: int | None = None, run_name: str | None = None,
                                checkpoint_id: str | None = None, device: str | None = None,
                                at: datetime | None = None) -> int:
        row = Generation(platform=platform, server_id=clip(server_id, 64), channel_id=clip(channel_id, 64),
                         user_id=clip(user_id, 64), user_name=clip(user_name, 200), created_at=aware(at),
                         prefix=prefix or "", temperature=temperature, top_k=top_k, top_p=top_p, length=length,
                         count=count, seed=seed, run_name=clip(run_name, 200), checkpoint_id=clip(checkpoint_id, 64),
                         device=clip(device, 64), status="pending", owner_id=self.process_id)
        async with self._write() as session:
            session.add(row)
            await session.flush()
            return row.id

    async def finish_generation(self, generation_id: int, candidates=(), *, duration: float | None = None,
                                samples: int | None = None, tokens: int | None = None, run_name: str | None = None,
                                checkpoint_id: str | None = None, device: str | None = None,
                                at: datetime | None = None) -> GenerationInfo:
        news = [as_new_candidate(item) for item in candidates]
        values = {"status": "ok", "duration_s": duration, "samples": samples, "tokens": tokens,
                  "finished_at": aware(at)}
        values.update({k: clip(v, n) for k, v, n in (("run_name", run_name, 200), ("checkpoint_id", checkpoint_id, 64),
                                                     ("device", device, 64)) if v is not None})
        async with self._write() as session:
            await self._settle_generation(session, generation_id, values)
            if news:
                await session.execute(insert(Candidate), [
                    {"generation_id": generation_id, "position": i, "text": c.text, "tokens": c.tokens,
                     "chars": len(c.text), "usable": c.usable, "reason": None if c.usable else clip(c.reason, 32),
                     "detail": c.detail or "", "message_id": None} for i, c in enumerate(news)])
            return await self._generation(session, generation_id)

    async def fail_generation(self, generation_id: int, error: str, *, duration: float | None = None,
                              at: datetime | None = None) -> None:
        async with self._write() as session:
            await self._settle_generation(session, generation_id, {
                "status": "failed", "error": str(error), "duration_s": duration, "finished_at": aware(at)})

    async def fail_stale_generations(self, before: datetime) -> int:
        return await self._fail_pending_generations(before)

    async def _settle_generation(self, session, generation_id: int, values: dict) -> None:
        generation_id = self._id(generation_id, "generation")
        result = await session.execute(update(Generation).where(Generation.id == generation_id,
                                                                Generation.status == "pending").values(**values))
        if result.rowcount == 1:
            return
        status = await session.scalar(select(Generation.status).where(Generation.id == generation_id))
        if status is None:
            raise NotFound(f"There is no generation #{generation_id} in the log.")
        raise StorageError(f"Generation #{generation_id} is already {status}; it cannot be finished again.")

    async def get_generation(self, generation_id: int) -> GenerationInfo:
        async with self._read() as session:
            return await self._generation(session, generation_id)

    async def _generation(self, session, generation_id: int) -> GenerationInfo:
        generation_id = self._id(generation_id, "generation")
        row = await session.get(Generation, generation_id, populate_existing=True)
        if row is None:
            raise NotFound(f"There is no generation #{generation_id} in the log.")
        found = await session.scalars(select(Candidate).where(Candidate.generation_id == generation_id)
                                      .order_by(Candidate.position))
        return record(GenerationInfo, row, candidates=tuple(record(CandidateInfo, c) for c in found))

    async def latest_generation(self, platform: str, channel_id: str | None, *,
                                include_unfinished: bool = False) -> GenerationInfo | None:
        """The newest generation in that channel: only a finished ("ok") one unless include_unfinished."""
        query = select(Generation.id).where(Generation.platform == platform, Generation.channel_id == channel_id)
        if not include_unfinished:
            query = query.where(Generation.status == "ok")
        async with self._read() as session:
            found = await session.scalar(query.order_by(Generation.id.desc()).limit(1))
            return None if found is None else await self._generation(session, found)

    async def set_candidate_message(self, candidate_id: int, message_id: str) -> None:
        candidate_id = self._id(candidate_id, "candidate")
        async with self._write() as session:
            result = await session.execute(update(Candidate).where(Candidate.id == candidate_id)
                                           .values(message_id=clip(message_id, 64)))
            if result.rowcount != 1:
                raise NotFound(f"There is no candidate #{candidate_id} in the log.")

    async def candidate_by_message(self, platform: str, message_id: str) -> CandidateInfo | None:
        query = (select(Candidate).join(Generation, Generation.id == Candidate.generation_id)
                 .where(Generation.platform == platform, Candidate.message_id == str(message_id))
                 .order_by(Candidate.id.desc()).limit(1))
        async with self._read() as session:
            found = await session.scalar(query)
            return None if found is None else record(CandidateInfo, found)

    async def candidate_in_channel(self, platform: str, channel_id: str | None,
                                   candidate_id: int) -> CandidateInfo | None:
        """Candidate #candidate_id if it belongs to a batch of that channel, else None (the chat front ends take a
        #ID only for a candidate shown where it is named)."""
        candidate_id = self._id(candidate_id, "candidate")
        query = (select(Candidate).join(Generation, Generation.id == Candidate.generation_id)
                 .where(Candidate.id == candidate_id, Generation.platform == platform,
                        Generation.channel_id == channel_id))
        async with self._read() as session:
            found = await session.scalar(query)
            return None if found is None else record(CandidateInfo, found)
